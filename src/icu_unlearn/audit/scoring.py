"""Every number the audit reads off the model's next-token distributions at the true
tokens, from the engine's teacher-forced pass (`scoring.teacher_forced`).

Sequences are prefix + suffix token ids; the logits at positions t0-1 .. T-2 predict
the suffix s_0..s_{m-1}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..audit_settings import SamplingScheme
from ..scoring import teacher_forced
from .extraction import suffix_logprob
from .membership import vocabulary_moments


@dataclass
class SuffixScores:
    """One sequence's teacher-forced suffix statistics."""

    logprobs: torch.Tensor  # (m,) log p(s_j | prefix, s_<j), float32
    hits: list[bool]  # the argmax after prefix + s_<j is s_j
    mu: torch.Tensor  # (m,) E_{z~p}[log p(z)] at each suffix position (Min-K%++)
    sigma: torch.Tensor  # (m,) its standard deviation
    scheme_logp: list[float]  # log P_S(suffix | prefix) for each scheme S (natural log)
    ma: float  # Eq. 9: argmax accuracy over positions 1..T-1 of the whole sequence
    greedy: torch.Tensor  # (T-1,) the argmax after x[:t], t = 1..T-1 (where EL decodes from)


def suffix_scores(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    prefix_lengths: Sequence[int],
    pad_token_id: int,
    schemes: Sequence[SamplingScheme],
    batch_size: int = 8,
) -> list[SuffixScores]:
    """SuffixScores of every sequence, in input order. Batched as `memorization_pass`
    batches (consecutive sequences): a sequence's logits move in their last bits with
    its batch's other sequences, and its greedy tokens are the ones EL's decoding starts
    from, so that the audit's EL and MA are the run's and `eval`'s."""

    def statistics(logits: torch.Tensor, suffix: torch.Tensor) -> tuple:
        logp = logits.log_softmax(-1)  # (m, V)
        mu, sigma = vocabulary_moments(logp)
        picked = logp.gather(-1, suffix[:, None]).squeeze(-1)
        by_scheme = [suffix_logprob(logits, suffix, s) for s in schemes]
        return picked.cpu(), mu.cpu(), sigma.cpu(), by_scheme

    scored = teacher_forced(
        model,
        sequences,
        pad_token_id,
        prefix_lengths,
        batch_size,
        per_suffix=statistics,
        longest_first=False,
    )
    return [
        SuffixScores(logprobs, hits[t0 - 1 :], mu, sigma, scheme_logp, ma, greedy[: len(seq) - 1])
        for (logprobs, mu, sigma, scheme_logp), hits, ma, t0, greedy, seq in zip(
            scored.suffix,
            scored.hits,
            scored.ma,
            prefix_lengths,
            scored.greedy,
            sequences,
            strict=True,
        )
    ]
