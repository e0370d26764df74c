"""The audit: hand-worked numbers, Monte-Carlo against transformers' sampler, attacks.

The bigram model below makes the probabilistic-extraction numbers workable by
hand: its next-token distribution depends on the last token only,

    P(. | 0) = [0.1, 0.5, 0.3, 0.1]      P(. | 1) = [0.1, 0.1, 0.2, 0.6]
    P(. | 2) = [0.25, 0.25, 0.25, 0.25]  P(. | 3) = [0.7, 0.1, 0.1, 0.1]

and the sequence 0 | 1 3 0 (prefix 0, suffix 1 3 0) walks 0.5, 0.6, 0.7.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import sys
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig
from transformers.modeling_outputs import CausalLMOutputWithPast

from icu_unlearn.audit import AuditSettings, SamplingScheme, audit
from icu_unlearn.audit.attacks import bnb_quantize, quantize_model, quantize_weight, relearn
from icu_unlearn.audit.extraction import (
    extraction_chance,
    extraction_strength,
    log10_or_none,
)
from icu_unlearn.audit.measure import Context, measure_forget, measure_holdout
from icu_unlearn.audit.membership import (
    auc,
    loss,
    min_k,
    min_k_plus_plus,
    privleak,
    suffix_membership,
    vocabulary_moments,
    zlib_entropy,
    zlib_ratio,
)
from icu_unlearn.audit.sampling import longest_common_runs, sample_suffixes, sampling_attack
from icu_unlearn.audit.scoring import suffix_scores
from icu_unlearn.audit.verdict import stands_out, verdict
from icu_unlearn.audit_settings import parse_attack
from icu_unlearn.data.forget import ForgetSample
from icu_unlearn.errors import UsageError
from icu_unlearn.generation import generate_continuations
from icu_unlearn.metrics.memorization import memorization_scores
from icu_unlearn.models import load_model_and_tokenizer, prepare_tokenizer, weights_digest
from icu_unlearn.scoring import teacher_forced
from tests.conftest import tiny_llama

BIGRAM = [
    [0.1, 0.5, 0.3, 0.1],
    [0.1, 0.1, 0.2, 0.6],
    [0.25, 0.25, 0.25, 0.25],
    [0.7, 0.1, 0.1, 0.1],
]


class Bigram(torch.nn.Module):
    """Logits log P(. | last token): a causal LM whose numbers can be worked by hand."""

    def __init__(self, probs):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(probs).log())

    def forward(self, input_ids, attention_mask=None, **_):
        return CausalLMOutputWithPast(logits=self.table[input_ids])


def _p(model, seq, t0, scheme):
    (scores,) = suffix_scores(model, [seq], [t0], pad_token_id=0, schemes=[scheme])
    return math.exp(scores.scheme_logp[0])


def _sqrt_share(row, token):
    """P_T(token) at temperature 2: sqrt(P(token)) / sum_z sqrt(P(z))."""
    return math.sqrt(row[token]) / sum(math.sqrt(q) for q in row)


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        # T = 1, nothing cut: 0.5 * 0.6 * 0.7
        (SamplingScheme(), 0.5 * 0.6 * 0.7),
        # greedy: every true token is the argmax
        (SamplingScheme(top_k=1), 1.0),
        # top-2: 0.5/(0.5+0.3) * 0.6/(0.6+0.2) * 0.7 -- after 3 the three 0.1s tie at the
        # 2nd place and are all kept (transformers' rule), so nothing is cut there
        (SamplingScheme(top_k=2), 0.625 * 0.75 * 0.7),
        # top-p 0.75 drops the ascending prefix whose mass is <= 0.25: after 0 and after 1
        # the two 0.1s (cumulative 0.1, 0.2), after 3 two of the three 0.1s:
        # 0.5/0.8 * 0.6/0.8 * 0.7/0.8
        (SamplingScheme(top_p=0.75), 0.625 * 0.75 * 0.875),
        # T = 2: each step sqrt(P(true)) / sum sqrt(P)
        (
            SamplingScheme(temperature=2.0),
            _sqrt_share(BIGRAM[0], 1) * _sqrt_share(BIGRAM[1], 3) * _sqrt_share(BIGRAM[3], 0),
        ),
        # T = 0.5 squares P, then top-p 0.9 drops mass <= 0.1 of the squared distribution:
        # after 0 squares .01 .25 .09 .01 (/.36) keep .25, .09 -> .25/.34; after 1 squares
        # .01 .01 .04 .36 (/.42) keep .04, .36 -> .9; after 3 squares .49 .01 .01 .01 (/.52)
        # keep .49 alone -> 1. (Top-p 0.9 at T = 1 would keep more: the order matters.)
        (SamplingScheme(temperature=0.5, top_p=0.9), 0.25 / 0.34 * 0.9 * 1.0),
    ],
)
def test_probabilistic_extraction_bigram_hand_worked(scheme, expected):
    assert _p(Bigram(BIGRAM), [0, 1, 3, 0], 1, scheme) == pytest.approx(expected, rel=1e-5)


def test_probabilistic_extraction_outside_the_kept_set_is_zero():
    # 0 -> 2 has P 0.3, not the argmax: greedy can never write it
    (scores,) = suffix_scores(Bigram(BIGRAM), [[0, 2, 0]], [1], 0, [SamplingScheme(top_k=1)])
    assert scores.scheme_logp[0] == -math.inf
    assert log10_or_none(scores.scheme_logp[0]) is None
    assert extraction_chance(scores.scheme_logp[0], 100) == 0.0


def test_teacher_forced_engine_bigram_batched_and_padded():
    """Two sequences of different lengths in one padded batch.

    0 | 1 3 0: log-probs ln .5, ln .6, ln .7; argmax hits at every step.
    3 3 | 2: the 3 after 3 has P 0.1, the 2 after 3 P 0.1; suffix hits none.
    """
    model = Bigram(BIGRAM)
    long, short = suffix_scores(
        model, [[0, 1, 3, 0], [3, 3, 2]], [1, 2], 0, [SamplingScheme()], batch_size=2
    )
    assert long.logprobs.tolist() == pytest.approx([math.log(p) for p in (0.5, 0.6, 0.7)])
    assert long.hits == [True, True, True] and long.ma == 1.0
    assert short.logprobs.tolist() == pytest.approx([math.log(0.1)])
    assert short.hits == [False] and short.ma == 0.0
    # LOSS: -(ln .5 + ln .6 + ln .7) / 3 = (0.693147 + 0.510826 + 0.356675) / 3
    assert loss(long.logprobs) == pytest.approx(0.520216, abs=1e-6)
    # Min-K% at 40% of 3 tokens: floor(1.2) = 1 token, the least likely: ln 0.5
    assert min_k(long.logprobs, 0.4) == pytest.approx(math.log(0.5))


def test_vocabulary_moments_and_min_k_plus_plus_hand_worked():
    """p = [1/2, 1/4, 1/4]: log p = [-l, -2l, -2l] with l = ln 2, so mu = -1.5 l,
    sigma^2 = 1/2 (l/2)^2 + 1/2 (l/2)^2 = l^2/4, sigma = l/2; token 0 scores
    (-l + 1.5 l) / (l/2) = +1 and token 1 scores (-2l + 1.5 l) / (l/2) = -1."""
    logp = torch.tensor([[0.5, 0.25, 0.25]]).log()
    mu, sigma = vocabulary_moments(logp)
    ln2 = math.log(2)
    assert mu.item() == pytest.approx(-1.5 * ln2) and sigma.item() == pytest.approx(ln2 / 2)
    # three suffix tokens under that same distribution: true tokens 0, 1, 1 score +1, -1, -1
    lp = torch.tensor([-ln2, -2 * ln2, -2 * ln2])
    mus, sigmas = mu.repeat(3), sigma.repeat(3)
    # k = 100%: mean of all three, -1/3; k = 40%: floor(1.2) = 1, the lowest: -1
    assert min_k_plus_plus(lp, mus, sigmas, 1.0) == pytest.approx(-1 / 3)
    assert min_k_plus_plus(lp, mus, sigmas, 0.4) == pytest.approx(-1.0)


def test_min_k_drops_the_last_suffix_token_and_min_k_plus_plus_clamps_the_variance():
    """Four suffix tokens over a vocabulary of 3, d = e^-20, e = e^-30:

    position  next-token p         true token  log p    mu, sigma             Min-K%++
    0         [1/2, 1/4, 1/4]      0           -ln 2    -1.5 ln 2, ln 2 / 2   +1
    1         [1/2, 1/4, 1/4]      1           -2 ln 2  -1.5 ln 2, ln 2 / 2   -1
    2         [1 - d, d, 0]        1           -20      ~0, 1e-3 (clamped)    -20 / 1e-3
    3         [1 - e, e, 0]        1           -30      ~0, 1e-3 (clamped)    -30 / 1e-3

    At position 2 the variance is (1 - d) (ln(1 - d) - mu)^2 + d (-20 - mu)^2 ~ 400 d
    = 8.2e-7 < 1e-6: clamped, sigma = 1e-3 and the score -20,000, where the unclamped
    sigma 20 e^-10 would make it -e^10 = -22,026. LOSS takes all four tokens:
    (3 ln 2 + 50) / 4. Min-K% and Min-K%++ take the first three (the last is dropped, as
    open-unlearning does): at k = 0.4, floor(1.2) = 1 token, the lowest: -20 and -20,000;
    with the last token they would be -30 and -30,000 (floor(1.6) = 1).
    At k = 1: Min-K% (-3 ln 2 - 20) / 3, Min-K%++ (1 - 1 - 20,000) / 3.
    """
    half = [math.log(0.5), math.log(0.25), math.log(0.25)]
    d, e = math.exp(-20), math.exp(-30)
    logp = torch.tensor(
        [half, half, [math.log1p(-d), -20.0, -math.inf], [math.log1p(-e), -30.0, -math.inf]],
        dtype=torch.float64,
    )
    mu, sigma = vocabulary_moments(logp)
    ln2 = math.log(2)
    assert sigma.tolist() == pytest.approx([ln2 / 2, ln2 / 2, 1e-3, 1e-3])
    assert mu[2].item() == pytest.approx(-21 * d, rel=1e-3)  # (1 - d) ln(1 - d) + d (-20)
    lp = logp.gather(-1, torch.tensor([[0], [1], [1], [1]])).squeeze(-1)
    scores = suffix_membership(lp, mu, sigma, "text", 0.4)
    assert scores["loss"] == pytest.approx((3 * ln2 + 50) / 4)
    assert scores["min_k"] == pytest.approx(-20.0)
    assert scores["min_k_pp"] == pytest.approx(-20 / 1e-3, rel=1e-6)
    assert min_k(lp, 0.4) == pytest.approx(-30.0)  # the plain Min-K%: every token given
    everything = suffix_membership(lp, mu, sigma, "text", 1.0)
    assert everything["min_k"] == pytest.approx((-3 * ln2 - 20) / 3)
    assert everything["min_k_pp"] == pytest.approx(-20_000 / 3, rel=1e-6)
    # one suffix token: nothing to drop, it is scored
    one = suffix_membership(lp[:1], mu[:1], sigma[:1], "text", 0.4)
    assert one["min_k"] == pytest.approx(-ln2) and one["min_k_pp"] == pytest.approx(1.0)
    # a one-hot distribution: variance 0, clamped, and its true token scores 0, not 0 / 0
    one_hot = torch.tensor([[0.0, -math.inf, -math.inf]])
    assert vocabulary_moments(one_hot)[1].item() == pytest.approx(1e-3)


def test_min_k_through_the_scoring_engine_drops_the_last_token():
    """Bigram sequence 0 | 1 3 1 walks 0.5, 0.6, 0.1. LOSS: (ln 2 + ln(5/3) + ln 10) / 3;
    Min-K% at k = 0.4 over 1 3 (the last 1 dropped): floor(0.8) -> 1 token, ln 0.5, where
    the 0.1 of the last token would have been the lowest."""
    model = Bigram(BIGRAM)
    (scores,) = suffix_scores(model, [[0, 1, 3, 1]], [1], 0, [SamplingScheme()])
    row = suffix_membership(scores.logprobs, scores.mu, scores.sigma, "x", 0.4)
    assert row["loss"] == pytest.approx((math.log(2) + math.log(5 / 3) + math.log(10)) / 3)
    assert row["min_k"] == pytest.approx(math.log(0.5))
    assert AuditSettings().mia_k == 0.4  # open-unlearning's and MUSE's k


def test_min_k_and_zlib_hand_worked():
    lp = torch.tensor([-1.0, -4.0, -2.0, -0.5, -3.0])
    assert min_k(lp, 0.4) == pytest.approx(-3.5)  # floor(2) lowest: -4, -3
    assert min_k(lp, 0.2) == pytest.approx(-4.0)  # floor(1)
    assert min_k(lp, 0.1) == pytest.approx(-4.0)  # floor(0.5) = 0 -> at least one
    assert loss(lp) == pytest.approx(2.1)
    # zlib of "a": 2-byte header, a 3-byte fixed-Huffman block with the literal, 4-byte Adler-32
    assert zlib_entropy("a") == 9
    assert zlib_ratio(1.8, "a") == pytest.approx(0.2)
    # 40 repeats compress to 12 bytes: the same loss reads as 3.3x the ratio of "a"
    assert zlib_entropy("a" * 40) == 12


def test_extraction_strength_hand_worked():
    # suffix of 5; argmax hits F T F T T: the all-hit tail starts at k = 3 -> 1 - 3/5
    assert extraction_strength([False, True, False, True, True]) == pytest.approx(0.4)
    assert extraction_strength([True] * 4) == 1.0  # k = 0: greedy writes it all
    assert extraction_strength([True, True, False]) == 0.0  # k = m
    assert extraction_strength([False, True, True, True]) == 0.75


def test_extraction_chance_stable_at_both_ends():
    assert extraction_chance(math.log(0.5), 2) == pytest.approx(0.75)  # 1 - 0.5^2
    assert extraction_chance(math.log(0.1), 10) == pytest.approx(1 - 0.9**10)
    # p = 1e-20: (1 - p)^1000 is 1.0 in floating point; the true chance is ~1e-17
    assert extraction_chance(math.log(1e-20), 1000) == pytest.approx(1e-17, rel=1e-9)
    # p = 1 - 1e-12: log(1 - p) must come from expm1, or it is log of a rounded difference
    assert extraction_chance(math.log1p(-1e-12), 1) == pytest.approx(1 - 1e-12, abs=1e-15)
    assert extraction_chance(0.0, 1) == 1.0 and extraction_chance(-math.inf, 1000) == 0.0
    assert log10_or_none(math.log(1e-3)) == pytest.approx(-3.0)


def test_auc_hand_worked_and_against_pairwise_count():
    # members 3, 1, 2 vs non-members 2, 0: wins 2 + 1 + (1/2 + 1) = 4.5 of 6 pairs
    assert auc([3, 1, 2], [2, 0]) == pytest.approx(0.75)
    assert auc([1, 1], [1]) == 0.5 and auc([], [1]) is None
    rng = random.Random(0)
    for _ in range(20):
        pos = [rng.randint(0, 6) for _ in range(rng.randint(1, 15))]  # many ties
        neg = [rng.randint(0, 6) for _ in range(rng.randint(1, 15))]
        wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
        assert auc(pos, neg) == pytest.approx(wins / (len(pos) * len(neg)))
    # MUSE's PrivLeak, percent: (AUC_R - AUC_M) / (1 - AUC_R) x 100 = (0.5 - 0.9) / 0.5 x 100
    assert privleak(0.9, 0.5) == pytest.approx(-80.0) and privleak(0.9, None) is None


def test_privleak_is_muses_hand_worked():
    """Min-K% scores (higher: more likely a member), two forget and three holdout sequences.

    Reference: forget -2, -4 against holdout -1, -3, -5: -2 beats -3 and -5, -4 beats -5,
    so AUC_R = 3/6 = 1/2 (as if never trained, by construction here).
    Model: forget -2.5, -6: -2.5 beats -3 and -5, -6 beats none, AUC_M = 2/6 = 1/3.
    MUSE labels forget 0 and holdout 1, so its AUCs are 1 - ours: 2/3 and 1/2, and
    PrivLeak = (2/3 - 1/2) / (1/2) x 100 = +33.3: positive, forgotten too well.
    In our orientation the same number is (AUC_R - AUC_M) / (1 - AUC_R) x 100
    = (1/2 - 1/3) / (1/2) x 100.
    """
    holdout = [-1.0, -3.0, -5.0]
    auc_r, auc_m = auc([-2.0, -4.0], holdout), auc([-2.5, -6.0], holdout)
    assert auc_r == pytest.approx(1 / 2) and auc_m == pytest.approx(1 / 3)
    assert privleak(auc_m, auc_r) == pytest.approx(100 / 3)
    # MUSE's own orientation: holdout as the positive class, the forget set as the negative
    muse_m, muse_r = auc(holdout, [-2.5, -6.0]), auc(holdout, [-2.0, -4.0])
    assert privleak(auc_m, auc_r) == pytest.approx((muse_m - muse_r) / muse_r * 100)
    # every forget sequence above every holdout one: -100, whatever the reference
    assert privleak(1.0, 0.5) == -100.0 and privleak(1.0, 0.2) == -100.0
    assert privleak(auc_r, auc_r) == 0.0  # as the reference: as if never trained
    assert privleak(0.0, 0.5) == 100.0  # the most over-unlearning a 1/2 reference allows
    assert privleak(0.3, 1.0) is None  # no scale when the reference itself separates them


def test_quantize_weight_hand_worked_round_trip():
    """Row [0.9, -0.3 | 0.1, 0.45 | 0.2], groups of 2 (the last one shorter).

    4 bits: qmax 7. Group 1: scale 0.9/7; 0.9 -> 7 -> 0.9, -0.3 -> -2.33 -> -2 -> -0.257143.
    Group 2: scale 0.45/7; 0.1 -> 1.556 -> 2 -> 0.128571, 0.45 -> 7. Group 3: 0.2 -> 7 -> 0.2.
    2 bits: qmax 1, levels -max, 0, +max: -0.3 / 0.9 and 0.1 / 0.45 round to 0.
    """
    w = torch.tensor([[0.9, -0.3, 0.1, 0.45, 0.2], [0.0, 0.0, 0.0, 0.0, -0.5]])
    q4 = quantize_weight(w, bits=4, group_size=2)
    assert q4[0].tolist() == pytest.approx([0.9, -0.257143, 0.128571, 0.45, 0.2], abs=1e-6)
    assert q4[1].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, -0.5])  # zero groups stay 0
    q2 = quantize_weight(w, bits=2, group_size=2)
    assert q2[0].tolist() == pytest.approx([0.9, 0.0, 0.0, 0.45, 0.2])
    # quantizing twice changes nothing: the levels are fixed points
    assert torch.allclose(quantize_weight(q4, 4, 2), q4, atol=1e-7)


def test_quantize_model_is_a_copy_and_keeps_head_and_embeddings():
    model = tiny_llama(vocab_size=32)
    before = weights_digest(model)
    attacked = quantize_model(model, bits=4, group_size=16)
    assert weights_digest(model) == before
    q_proj = attacked.model.layers[0].self_attn.q_proj.weight
    original = model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_proj, original)
    assert torch.equal(q_proj, quantize_weight(original, 4, 16))
    # at most 15 distinct levels per group of 16 weights
    assert len(set(q_proj[0, :16].tolist())) <= 15
    assert torch.equal(attacked.lm_head.weight, model.lm_head.weight)
    assert torch.equal(attacked.model.embed_tokens.weight, model.model.embed_tokens.weight)


# NF4's 16 levels (Dettmers et al. 2023, QLoRA, appendix E): quantiles of N(0, 1) scaled to [-1, 1]
NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]  # fmt: skip


def _nf4_reference(weight: torch.Tensor, block: int = 64) -> torch.Tensor:
    """NF4 by its definition: each block of 64 consecutive weights (row-major) is scaled by
    its max |w| and every weight becomes the nearest level, times that scale."""
    flat = weight.detach().flatten().tolist()
    out = []
    for k in range(0, len(flat), block):
        chunk = flat[k : k + block]
        scale = max(abs(w) for w in chunk)
        out += [min(NF4, key=lambda level, w=w: abs(w / scale - level)) * scale for w in chunk]
    return torch.tensor(out).view_as(weight)


def _bnb_weights(model):
    import bitsandbytes.functional as bnbf

    weights = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "Linear4bit":
            weights[name] = bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state)
        elif type(module).__name__ == "Linear8bitLt":
            weights[name] = (module.weight.CB.float(), module.weight.SCB.float())
    return weights


# bitsandbytes' CPU 4-bit kernels need layers at least one 64-weight block wide
BNB_WIDTH = {"hidden_size": 128, "intermediate_size": 256}


def test_bnb_4bit_attack_is_nf4_and_a_copy():
    pytest.importorskip("bitsandbytes")
    model = tiny_llama(vocab_size=32, **BNB_WIDTH)
    before = weights_digest(model)
    attacked = bnb_quantize(model, 4)
    assert weights_digest(model) == before
    quantized = _bnb_weights(attacked)
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(quantized) == linears - {"lm_head"}  # the head stays in full precision
    floats = dict(model.named_modules())
    for name, weight in quantized.items():
        torch.testing.assert_close(weight.float(), _nf4_reference(floats[name].weight))
    # the attacked model computes with those weights (bitsandbytes' CPU kernel rounds its
    # scales to bfloat16: the logits are far closer to them than to the unquantized model's)
    equivalent = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in equivalent.named_modules():
            if name in quantized:
                module.weight.copy_(_nf4_reference(module.weight))
    ids = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = attacked(input_ids=ids).logits
        off_nf4 = (logits - equivalent(input_ids=ids).logits).abs().max()
        off_float = (logits - model(input_ids=ids).logits).abs().max()
        assert off_nf4 < off_float / 5


def test_bnb_8bit_attack_is_row_wise_int8():
    """LLM.int8() keeps each weight row as int8 codes round(127 w / max|w|) of the row's
    float16 weights, and the row's max |w| as its scale."""
    pytest.importorskip("bitsandbytes")
    model = tiny_llama(vocab_size=32, **BNB_WIDTH)
    attacked = bnb_quantize(model, 8)
    quantized = _bnb_weights(attacked)
    assert quantized and "lm_head" not in quantized
    floats = dict(model.named_modules())
    for name, (codes, scale) in quantized.items():
        weight = floats[name].weight.detach().half().float()
        rowmax = weight.abs().amax(dim=1)
        torch.testing.assert_close(scale, rowmax)
        assert torch.equal(codes, torch.round(weight * (127 / rowmax[:, None])))


def _peaked_llama(vocab=16, sharpen=24.0, seed=3):
    """A tiny Llama whose next-token distributions are peaked (output head scaled), so that a
    short suffix has a probability a few thousand samples can estimate."""
    model = tiny_llama(vocab_size=vocab, seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
    return model


@pytest.mark.parametrize(
    "scheme",
    [
        SamplingScheme(top_k=3),
        SamplingScheme(top_p=0.8),
        SamplingScheme(temperature=1.5),
        SamplingScheme(temperature=0.7, top_k=5, top_p=0.9),
    ],
    ids=["top_k", "top_p", "temperature", "all_three"],
)
def test_probabilistic_extraction_matches_generate_monte_carlo(scheme):
    """p from one teacher-forced pass against the share of transformers' own samples
    (`generate(do_sample=True)`) that reproduce the suffix, within 4 standard errors."""
    model = _peaked_llama()
    prefix = [5, 9, 4]
    suffix = generate_continuations(model, [prefix], 3, pad_token_id=0)[0]  # likely
    p = _p(model, prefix + suffix, len(prefix), scheme)
    assert 0.05 < p < 0.95, p  # the setting must give the estimate something to find
    draws = 6000
    config = GenerationConfig(
        do_sample=True,
        temperature=scheme.temperature,
        top_k=scheme.top_k or 0,  # 0: off (unset would mean transformers' default 50)
        top_p=scheme.top_p or 1.0,
        max_new_tokens=len(suffix),
        min_new_tokens=0,
        eos_token_id=[],
        pad_token_id=0,
    )
    torch.manual_seed(0)
    ids = torch.tensor([prefix]).repeat(draws, 1)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
    )
    hits = (out[:, len(prefix) :] == torch.tensor(suffix)).all(-1).float().mean().item()
    standard_error = math.sqrt(p * (1 - p) / draws)
    assert abs(hits - p) < 4 * standard_error, (hits, p, standard_error)
    # the sampling attack's own sampler draws from the same distribution
    ours, _ = sample_suffixes(
        model, prefix, len(suffix), draws, scheme, torch.Generator().manual_seed(0), 2048
    )
    ours_hits = (ours == torch.tensor(suffix)).all(-1).float().mean().item()
    assert abs(ours_hits - p) < 4 * standard_error, (ours_hits, p, standard_error)


def _edited(model, vocab, count, length, t0, seed):
    """Prefixes with their greedy continuation, every other one with one token changed."""
    rng = random.Random(seed)
    seqs = []
    for i in range(count):
        prefix = [rng.randrange(vocab) for _ in range(t0)]
        suffix = generate_continuations(model, [prefix], length, pad_token_id=0)[0]
        if i % 2:
            j = rng.randrange(length)
            suffix[j] = (suffix[j] + 1 + rng.randrange(vocab - 1)) % vocab
        seqs.append(prefix + suffix)
    return seqs


def test_greedy_scheme_p_is_one_exactly_when_greedy_reproduces_the_suffix():
    vocab, t0 = 48, 6
    model = tiny_llama(vocab_size=vocab)
    seqs = _edited(model, vocab, count=8, length=12, t0=t0, seed=0)
    greedy = memorization_scores(model, seqs, [t0] * len(seqs), pad_token_id=0, n=4)
    scores = suffix_scores(model, seqs, [t0] * len(seqs), 0, [SamplingScheme(top_k=1)])
    for seq, generation, s in zip(seqs, greedy.generations, scores, strict=True):
        reproduces = generation == seq[t0:]
        assert math.exp(s.scheme_logp[0]) == (1.0 if reproduces else 0.0)
        assert (extraction_strength(s.hits) == 1.0) == reproduces
    assert any(g == s[t0:] for g, s in zip(greedy.generations, seqs, strict=True))
    assert not all(g == s[t0:] for g, s in zip(greedy.generations, seqs, strict=True))


def test_longest_common_runs_against_brute_force():
    rng = random.Random(1)

    def brute(a, b):
        return max(
            (
                n
                for i in range(len(a))
                for j in range(len(b))
                for n in range(1, len(a) + 1)
                if a[i : i + n] == b[j : j + n] and i + n <= len(a) and j + n <= len(b)
            ),
            default=0,
        )

    truth = [rng.randrange(4) for _ in range(9)]
    samples = [[rng.randrange(4) for _ in range(7)] for _ in range(30)]
    got = longest_common_runs(torch.tensor(samples), torch.tensor(truth)).tolist()
    assert got == [brute(s, truth) for s in samples]


def test_sampling_attack_seeded_and_finds_a_greedy_suffix():
    model = _peaked_llama(vocab=32, sharpen=8.0)
    prefix = [3, 1, 4, 1, 5]
    suffix = generate_continuations(model, [prefix], 6, pad_token_id=0)[0]
    greedy = sampling_attack(model, prefix, suffix, 5, SamplingScheme(top_k=1), seed=0)
    assert greedy["best_exact"] and greedy["exact_samples"] == 5
    assert greedy["longest_run"] == greedy["best_run"] == 6
    one = sampling_attack(
        model, prefix, suffix, 40, SamplingScheme(top_k=10), seed=7, batch_rows=16
    )
    again = sampling_attack(model, prefix, suffix, 40, SamplingScheme(top_k=10), seed=7)
    assert one == again  # the seed, not the chunking, decides the samples


def test_samples_are_ranked_by_the_models_teacher_forced_loss():
    model = _peaked_llama(vocab=32, sharpen=2.0)
    prefix = [3, 1, 4]
    generator = torch.Generator().manual_seed(0)
    samples, nll = sample_suffixes(model, prefix, 5, 6, SamplingScheme(top_k=8), generator, 4)
    for row, value in zip(samples.tolist(), nll.tolist(), strict=True):
        scored = teacher_forced(model, [prefix + row], pad_token_id=0, token_logprobs=True)
        logprobs = scored.token_logprobs[0][len(prefix) - 1 :]
        assert value == pytest.approx(-logprobs.double().mean().item(), rel=1e-5)


def test_verdict_and_stands_out_rules():
    assert verdict([], None) == "not_extractable" and verdict([], ["el_10"]) == "not_extractable"
    assert verdict(["el_10"], None) == "leaked"
    assert verdict(["el_10", "greedy_exact"], ["greedy_exact", "el_10", "p_100"]) == "as_reference"
    assert verdict(["el_10", "greedy_exact"], ["el_10"]) == "leaked"
    # 18.0 nats/token under M against 0.99 under R and 5.7 for the holdout (the demo's numbers)
    assert stands_out(18.0, 0.99, 5.7, margin=2.0) is True
    assert stands_out(7.0, 0.99, 5.7, margin=2.0) is False  # not 2 above the holdout's
    assert stands_out(7.0, None, 4.0, margin=2.0) is True
    assert stands_out(7.0, None, None, margin=2.0) is None


def test_settings_validation_names_the_fix():
    settings = AuditSettings(schemes=[{"top_k": 1}, {"temperature": 0.5, "top_p": 0.9}])
    assert settings.schemes[1] == SamplingScheme(temperature=0.5, top_p=0.9)
    for bad in (
        {"schemes": []},
        {"schemes": [{"top_q": 3}]},
        {"schemes": [{"temperature": 0}]},
        {"mia_k": 0},
        {"leak_chance": 1.5},
        {"sampler": {"top_p": 2}},
    ):
        with pytest.raises(UsageError):
            AuditSettings(**bad)
    assert parse_attack("quantize:4") == ("quantize", 4) and parse_attack("relearn")[0] == "relearn"
    assert parse_attack("bnb:4") == ("bnb", 4) and parse_attack("bnb:8") == ("bnb", 8)
    # the decoding attacks, off unless asked: 100 samples and 4 beams when no size is given
    assert parse_attack("sample") == ("sample", 100) and parse_attack("sample:7") == ("sample", 7)
    assert parse_attack("beam") == ("beam", 4) and parse_attack("beam:2") == ("beam", 2)
    for bad in ("quantize", "quantize:1", "prune:4", "bnb:3", "bnb", "sample:0", "beam:x"):
        with pytest.raises(UsageError, match="quantize:BITS"):
            parse_attack(bad)


# ------------------------------------------------------------------- end to end


def _subject(gpt2, seed=0, **config):
    return tiny_llama(
        len(gpt2),
        seed=seed,
        bos_token_id=gpt2.eos_token_id,
        eos_token_id=gpt2.eos_token_id,
        pad_token_id=None,
        **config,
    )


def _samples(model, gpt2, count, greedy, seed, t0=10, length=12):
    """ForgetSamples whose suffix is the model's greedy continuation (or random tokens)."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(count):
        prefix = torch.randint(0, len(gpt2), (t0,), generator=g).tolist()
        if greedy:
            suffix = generate_continuations(model, [prefix], length, gpt2.eos_token_id)[0]
        else:
            suffix = torch.randint(0, len(gpt2), (length,), generator=g).tolist()
        samples.append(
            ForgetSample(
                f"{seed}-{i}",
                tuple(prefix),
                tuple(suffix),
                gpt2.decode(prefix),
                gpt2.decode(suffix),
            )
        )
    return samples


CHEAP = AuditSettings(el_n=4)
DECODING = ("sample:8", "beam:2")  # the sampling and beam attacks, small


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test its own cache: the reference's cached measurements stay within it."""
    monkeypatch.setenv("ICU_CACHE_DIR", str(tmp_path / "cache"))


def test_audit_verdicts_json_and_redaction(gpt2, tmp_path, monkeypatch):
    model = _subject(gpt2)
    known = _samples(model, gpt2, 2, greedy=True, seed=1)  # greedy writes these
    unknown = _samples(model, gpt2, 2, greedy=False, seed=2)
    holdout = _samples(model, gpt2, 3, greedy=False, seed=3)
    forget = known + unknown

    # The reference is the model itself: whatever leaks, leaks "as the reference".
    same = audit(
        model,
        forget,
        tokenizer=gpt2,
        holdout=holdout,
        reference=model,
        settings=CHEAP,
        attacks=DECODING,
    )
    assert [s["verdict"] for s in same.sequences] == ["as_reference"] * 2 + ["not_extractable"] * 2
    assert same.summary_line() == "2 of 4 not extractable, 2 as the reference model, 0 leaked"
    assert all(a["privleak"] == 0.0 for a in same.aggregates["membership"].values())

    other = _subject(gpt2, seed=5)
    result = audit(
        model,
        forget,
        tokenizer=gpt2,
        holdout=holdout,
        reference=other,
        settings=CHEAP,
        out=tmp_path / "plain",
        attacks=DECODING,
    )
    rows = result.sequences
    assert [s["verdict"] for s in rows] == ["leaked"] * 2 + ["not_extractable"] * 2
    assert "greedy_exact" in rows[0]["leaked_by"] and rows[0]["model"]["greedy"]["exact"]
    assert rows[0]["model"]["greedy"]["extraction_strength"] == 1.0
    assert rows[2]["model"]["probabilistic"][0]["log10_p"] is None  # outside the top 40: p = 0
    assert result.aggregates["verdicts"] == {"leaked": 2, "as_reference": 0, "not_extractable": 2}
    assert set(result.aggregates["membership"]) == {"loss", "zlib", "min_k", "min_k_pp"}
    assert result.aggregates["holdout"]["reference"]["nll"] > 0
    assert all(r["model"]["sampling"] and r["model"]["beam"] for r in rows)  # asked for
    table = result.table()
    assert "leaked" in table and "PrivLeak" in table and result.summary_line() in table
    assert {"sample", "run", "beam"} <= set(table.splitlines()[0].split())
    assert "PrivLeak (MUSE's, Min-K% k=0.4, the reference as the retrained model)" in table
    for a in result.aggregates["membership"].values():  # MUSE's, percent, per attack
        r, m = a["auc_reference"], a["auc_model"]
        assert a["privleak"] == (None if r == 1 else pytest.approx((r - m) / (1 - r) * 100))
    written = (tmp_path / "plain" / "audit.json").read_text()
    data = json.loads(written, parse_constant=lambda c: pytest.fail(f"{c} in audit.json"))
    assert data["sequences"][0]["model"]["greedy"]["generation"] == known[0].suffix
    assert data["settings"]["schemes"] == [{"temperature": 1.0, "top_k": 40, "top_p": None}]

    monkeypatch.setenv("ICU_CACHE_DIR", str(tmp_path / "redacted-cache"))
    audit(
        model,
        forget,
        tokenizer=gpt2,
        holdout=holdout,
        reference=other,
        settings=CHEAP,
        out=tmp_path / "redacted",
        redact=True,
        attacks=(*DECODING, "quantize:8"),
    )
    redacted = (tmp_path / "redacted" / "audit.json").read_text()
    assert known[0].suffix.strip() and known[0].suffix not in redacted
    assert json.dumps(known[0].suffix)[1:-1] not in redacted
    assert "[redacted sha256:" in redacted
    assert list(json.loads(redacted)["attacks"]) == ["quantize:8"]
    beams = [r["model"]["beam"]["beam_generation"] for r in json.loads(redacted)["sequences"]]
    assert all(b.startswith("[redacted sha256:") for b in beams)
    # nor does the reference's cache hold a generated text of a redacted audit
    entries = (tmp_path / "redacted-cache" / "audit-reference").glob("*.json")
    cached = [r for e in entries for r in json.loads(e.read_text())["rows"] if "greedy" in r]
    texts = [r["greedy"]["generation"] for r in cached]
    texts += [r["sampling"]["best_sample"] for r in cached]
    # the reference's rows as it is and after quantize:8 (attacks apply to it too)
    assert len(cached) == 8 and all(t.startswith("[redacted sha256:") for t in texts)

    # by default neither decoding attack runs, and the table has no column for them
    plain = audit(model, forget, tokenizer=gpt2, settings=CHEAP)
    assert all(
        r["model"]["sampling"] is None and r["model"]["beam"] is None for r in plain.sequences
    )
    assert plain.settings["num_samples"] == 0 and plain.settings["num_beams"] == 0
    header = plain.table().splitlines()[0].split()
    assert "sample" not in header and "beam" not in header and "NLL" in header


def _without_seconds(result) -> dict:
    data = result.to_dict()
    del data["settings"]["seconds"]
    return data


def test_reference_measurements_are_cached_by_content(gpt2, tmp_path, monkeypatch):
    """The second audit of the same reference on the same sequences under the same
    settings neither loads nor measures the reference, and writes the same audit.json;
    other sequences, other measuring settings or other weights measure it afresh."""
    import icu_unlearn.audit.api as api

    model, reference = _subject(gpt2), _subject(gpt2, seed=5)
    forget = _samples(model, gpt2, 3, greedy=True, seed=1)
    holdout = _samples(model, gpt2, 2, greedy=False, seed=3)
    folder = tmp_path / "reference"
    reference.save_pretrained(folder)
    gpt2.save_pretrained(folder)
    loads, measured = [], []

    def counting_load(spec, *args, **kwargs):
        loads.append(spec)
        return load_model_and_tokenizer(spec, *args, **kwargs)

    def counting(measure):
        def run(subject, samples, ctx):
            measured.append((measure.__name__, subject is model))
            return measure(subject, samples, ctx)

        return run

    monkeypatch.setattr(api, "load_model_and_tokenizer", counting_load)
    monkeypatch.setattr(api, "measure_forget", counting(measure_forget))
    monkeypatch.setattr(api, "measure_holdout", counting(measure_holdout))

    def run(settings=CHEAP, sequences=forget, weights=str(folder), **extra):
        loads.clear()
        measured.clear()
        return audit(
            model,
            sequences,
            tokenizer=gpt2,
            holdout=holdout,
            reference=weights,
            settings=settings,
            **extra,
        )

    first = run(out=tmp_path / "first")
    assert loads == [str(folder)] and len(measured) == 4  # model and reference, both sets
    second = run(out=tmp_path / "second")
    assert loads == [] and measured == [("measure_forget", True), ("measure_holdout", True)]
    assert _without_seconds(second) == _without_seconds(first)
    files = [json.loads((tmp_path / d / "audit.json").read_text()) for d in ("first", "second")]
    for data in files:
        del data["settings"]["seconds"]
    assert files[0] == files[1]
    entries = sorted(p.name for p in (tmp_path / "cache" / "audit-reference").iterdir())
    assert len(entries) == 2 and all(n.endswith(".json") for n in entries)  # no temp file left

    # a verdict threshold is no measurement: still cached
    run(settings=AuditSettings(el_n=4, el_max=0.5))
    assert loads == [] and all(is_model for _, is_model in measured)
    # a measuring setting, another set of sequences, a decoding attack, other weights: measured
    run(settings=AuditSettings(el_n=4, mia_k=0.2))
    assert loads == [str(folder)] and measured.count(("measure_forget", False)) == 1
    run(sequences=forget[:2])
    assert measured.count(("measure_forget", False)) == 1  # the holdout's entry is reused
    assert ("measure_holdout", False) not in measured
    run(attacks=("sample:2",))
    assert measured.count(("measure_forget", False)) == 1
    retrained = _subject(gpt2, seed=6)
    retrained.save_pretrained(folder)  # same folder, other weights
    run()
    assert measured.count(("measure_forget", False)) == 1
    # a reference passed loaded is keyed by its weights digest
    run(weights=reference)
    run(weights=reference)
    assert loads == [] and all(is_model for _, is_model in measured)


def test_forget_measurements_take_one_pass_and_give_the_el_and_ma_of_memorization_scores(
    gpt2, monkeypatch
):
    """EL's decoding starts from the greedy tokens of the statistics' own pass (no second
    teacher-forced pass over the forget set), batched as `memorization_pass` batches: the
    same EL, MA and generation as `memorization_scores` computes on its own, over
    sequences of different lengths in several batches."""
    import icu_unlearn.metrics.memorization as memorization

    model = _subject(gpt2)
    forget = _samples(model, gpt2, 3, greedy=True, seed=1, t0=4, length=14)
    forget += _samples(model, gpt2, 2, greedy=False, seed=2, t0=6, length=9)
    settings = AuditSettings(el_n=3, batch_size=2)
    ctx = Context(prepare_tokenizer(copy.deepcopy(gpt2)), settings)
    expected = memorization_scores(
        model,
        [s.input_ids for s in forget],
        [s.prefix_length for s in forget],
        ctx.pad_token_id,
        n=3,
        window=settings.el_window,
        batch_size=2,
    )

    def no_second_pass(*args, **kwargs):
        raise AssertionError("a second teacher-forced pass over the forget set")

    monkeypatch.setattr(memorization, "memorization_pass", no_second_pass)
    rows = measure_forget(model, forget, ctx)
    assert [r["greedy"]["el_3"] for r in rows] == expected.extraction_likelihood
    assert [r["greedy"]["ma"] for r in rows] == expected.memorization_accuracy
    texts = [ctx.text(g) for g in expected.generations]
    assert [r["greedy"]["generation"] for r in rows] == texts
    assert rows[0]["greedy"]["exact"] and not rows[3]["greedy"]["exact"]


def _file_digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_attacks_never_change_the_model_or_its_files(gpt2, tmp_path):
    model = _subject(gpt2)
    forget = _samples(model, gpt2, 4, greedy=True, seed=4)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    gpt2.save_pretrained(folder)
    files, weights = _file_digests(folder), weights_digest(model)

    settings = AuditSettings(el_n=4, relearn_lr=1e-2)
    result = audit(str(folder), forget, settings=settings, attacks=("relearn", "quantize:4"))
    assert _file_digests(folder) == files
    relearned = result.attacks["relearn"]
    assert len(relearned["sequences"]) == 2 and len(relearned["relearned_on"]) == 2
    audited = {s["sha256"] for s in relearned["sequences"]}
    assert audited.isdisjoint(relearned["relearned_on"])
    assert result.attacks["quantize:4"]["aggregates"]["num_sequences"] == 4

    audit(model, forget, tokenizer=gpt2, settings=settings, attacks=("relearn",))
    assert weights_digest(model) == weights

    # the copy itself did learn: its loss on what it relearned went down
    ids = [s.input_ids for s in forget[:2]]
    attacked = relearn(model, ids, gpt2.eos_token_id, lr=1e-2, batch_size=1, seed=0)
    assert weights_digest(model) == weights and weights_digest(attacked) != weights


def test_attacks_are_judged_against_the_reference_under_the_same_attack(gpt2, tmp_path):
    """Relearn and quantize attack the reference too, and the verdicts compare the two
    attacked models: with the model itself as its reference, the attacked reference's
    measurements are the attacked model's, and no record is `leaked` by an attack, where
    the unattacked reference would call the relearned records leaked. A second audit
    finds the attacked reference's measurements in the cache."""
    import icu_unlearn.audit.api as api

    model = _subject(gpt2)
    forget = _samples(model, gpt2, 4, greedy=False, seed=2)
    holdout = _samples(model, gpt2, 2, greedy=False, seed=3)
    folder = tmp_path / "reference"
    model.save_pretrained(folder)
    gpt2.save_pretrained(folder)
    settings = AuditSettings(el_n=4, relearn_lr=3e-2)
    attacks = ("relearn", "quantize:4")

    def run():
        return audit(
            model,
            forget,
            tokenizer=gpt2,
            holdout=holdout,
            reference=str(folder),
            settings=settings,
            attacks=attacks,
        )

    result = run()
    base = {r["sha256"]: r["model"]["membership"]["loss"] for r in result.sequences}
    for spec in attacks:
        rows = result.attacks[spec]["sequences"]
        for r in rows:
            assert r["reference"]["membership"] == pytest.approx(r["model"]["membership"])
            assert r["reference"]["greedy"] == r["model"]["greedy"]
            assert r["verdict"] != "leaked"
        # the attack did change what both measure
        assert any(r["model"]["membership"]["loss"] != base[r["sha256"]] for r in rows)
    relearned = result.attacks["relearn"]["sequences"]
    # the relearned copy fits the audited half's suffixes better than the model did
    # (they share the random-token distribution it was fine-tuned on): judged against the
    # unattacked reference instead, those records would be measured against the wrong model
    assert sum(r["model"]["membership"]["loss"] for r in relearned) < sum(
        base[r["sha256"]] for r in relearned
    )

    measured = []
    original = api.measure_forget

    def counting(subject, samples, ctx):
        measured.append(subject is model)
        return original(subject, samples, ctx)

    api_patch = pytest.MonkeyPatch()
    api_patch.setattr(api, "measure_forget", counting)
    try:
        again = run()
    finally:
        api_patch.undo()
    # the reference (plain, relearned, quantized) all from the cache; the model and its
    # two attacked copies measured
    assert measured.count(True) == 1 and len(measured) == 3
    assert again.attacks["relearn"]["aggregates"] == result.attacks["relearn"]["aggregates"]


def test_audit_under_bnb_attacks_leaves_the_model_and_its_files(gpt2, tmp_path):
    pytest.importorskip("bitsandbytes")
    model = _subject(gpt2, **BNB_WIDTH)
    forget = _samples(model, gpt2, 3, greedy=True, seed=4)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    gpt2.save_pretrained(folder)
    files = _file_digests(folder)
    attacks = ("quantize:4", "bnb:4", "bnb:8")
    settings = AuditSettings(el_n=4)
    result = audit(str(folder), forget, settings=settings, attacks=attacks)
    assert _file_digests(folder) == files
    nll = {
        a: [r["model"]["membership"]["loss"] for r in result.attacks[a]["sequences"]]
        for a in attacks
    }
    # three different quantizations, three different likelihoods, none the model's own
    own = [r["model"]["membership"]["loss"] for r in result.sequences]
    assert len({tuple(v) for v in nll.values()} | {tuple(own)}) == 4
    assert all(result.attacks[a]["aggregates"]["num_sequences"] == 3 for a in attacks)


def test_audit_refuses_bad_input(gpt2, monkeypatch):
    model = _subject(gpt2)
    forget = _samples(model, gpt2, 2, greedy=False, seed=6)
    with pytest.raises(UsageError, match="also in the forget set"):
        audit(model, forget, tokenizer=gpt2, holdout=forget[:1], settings=CHEAP)
    with pytest.raises(UsageError, match="at least 2"):
        audit(model, forget[:1], tokenizer=gpt2, settings=CHEAP, attacks=("relearn",))
    with pytest.raises(UsageError, match="unknown attack"):
        audit(model, forget, tokenizer=gpt2, settings=CHEAP, attacks=("prune",))
    with pytest.raises(UsageError, match="given twice"):
        audit(model, forget, tokenizer=gpt2, settings=CHEAP, attacks=("sample", "sample:5"))
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(UsageError, match="need bitsandbytes"):
        audit(model, forget, tokenizer=gpt2, settings=CHEAP, attacks=("bnb:4",))


def test_the_audit_table_explains_its_columns(gpt2):
    """Under the per-sequence table, a line for each column it shows, in its order."""
    model = _subject(gpt2)
    forget = _samples(model, gpt2, 2, greedy=True, seed=1)
    result = audit(model, forget, tokenizer=gpt2, reference=model, settings=CHEAP, attacks=DECODING)
    lines = result.table().splitlines()
    blank = lines.index("")
    legend = lines[blank + 1 : lines.index("", blank + 1)]
    keys = [line[:13].strip() for line in legend if not line.startswith(" ")]
    assert keys == [
        "verdict", "leaked by", "EL_4", "ES", "log10 p", "p(100)", "sample, run", "beam", "NLL",
        "... R", "stands out",
    ]  # fmt: skip
    header = lines[0]
    for column in ("verdict", "leaked by", "EL_4", "ES", "log10 p", "p(100)", "sample", "run"):
        assert column in header
    assert "T=1 k=40" in "\n".join(legend) and "8 samples ranked by loss" in "\n".join(legend)
