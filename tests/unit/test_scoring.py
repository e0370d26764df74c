"""The scoring engine's teacher-forced pass, on a bigram model whose numbers are worked by hand."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from icu_unlearn.scoring import teacher_forced

BIGRAM = [  # P(next | last token)
    [0.1, 0.5, 0.3, 0.1],
    [0.1, 0.1, 0.2, 0.6],
    [0.25, 0.25, 0.25, 0.25],
    [0.7, 0.1, 0.1, 0.1],
]


class Bigram(torch.nn.Module):
    """Logits log P(. | last token); records the batches it is given."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(BIGRAM, dtype=torch.float64).log())
        self.batches: list[list[list[int]]] = []

    def forward(self, input_ids, attention_mask=None, **_):
        self.batches.append(
            [row[: int(m.sum())] for row, m in zip(input_ids.tolist(), attention_mask, strict=True)]
        )
        return CausalLMOutputWithPast(logits=self.table[input_ids])


# C = 2 | 1: after 2 every token has P 1/4, the argmax is the first, 0: a miss; ln 1/4.
# A = 0 | 1 3 0: the argmax after 0, 1, 3 is 1, 3, 0: three hits; ln .5, ln .6, ln .7.
# B = 3 3 | 2: the argmax after 3 is 0: two misses; ln .1, ln .1.
SEQS = [[2, 1], [0, 1, 3, 0], [3, 3, 2]]
T0S = [1, 1, 2]


@pytest.mark.parametrize("longest_first", [True, False])
def test_teacher_forced_hand_worked_in_the_callers_order(longest_first):
    model = Bigram()
    scored = teacher_forced(
        model, SEQS, 0, T0S, batch_size=2, suffix_nll=True, token_logprobs=True,
        per_suffix=lambda logits, targets: (logits.exp(), targets.tolist()),
        longest_first=longest_first,
    )  # fmt: skip
    assert scored.hits == [[False], [True, True, True], [False, False]]
    assert scored.ma == [0.0, 1.0, 0.0]
    expected = [[0.25], [0.5, 0.6, 0.7], [0.1, 0.1]]
    for logprobs, probs in zip(scored.token_logprobs, expected, strict=True):
        assert logprobs.dtype == torch.float32
        assert logprobs.tolist() == pytest.approx([math.log(p) for p in probs], rel=1e-6)
    # mean -ln P over t >= t0: ln 4; (ln 2 + ln 5/3 + ln 10/7) / 3; ln 10 (t0 = 2: one token)
    assert scored.suffix_nll == pytest.approx(
        [math.log(4), -(math.log(0.5) + math.log(0.6) + math.log(0.7)) / 3, math.log(10)],
        rel=1e-6,
    )
    # the suffix's float32 logits: the rows after x_{t0-1} .. x_{T-2}; the suffix's tokens
    after, suffixes = ([2], [0, 1, 3], [3]), ([1], [1, 3, 0], [2])
    for (probs, targets), rows, suffix in zip(scored.suffix, after, suffixes, strict=True):
        torch.testing.assert_close(probs, torch.tensor([BIGRAM[r] for r in rows]))
        assert targets == suffix
    assert scored.greedy[1].tolist() == [1, 3, 0, 1]  # after 0, 1, 3, 0
    # longest first: A and B, then C; in the caller's order: C and A, then B
    batches = [[SEQS[1], SEQS[2]], [SEQS[0]]] if longest_first else [SEQS[:2], SEQS[2:]]
    assert model.batches == batches


def test_only_what_is_asked_for():
    scored = teacher_forced(Bigram(), SEQS, 0)
    assert scored.suffix_nll is None and scored.token_logprobs is None and scored.suffix is None
    assert scored.ma == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="prefix lengths"):
        teacher_forced(Bigram(), SEQS, 0, suffix_nll=True)
