"""Greedy and probabilistic extraction of one suffix, from teacher-forced numbers.

Extraction strength (Carlini et al. 2021, "Extracting Training Data from Large
Language Models"; open-unlearning's ES): with s_0..s_{m-1} the suffix and k the
first position from which every teacher-forced argmax equals the true token,
ES = 1 - k / m. Greedy decoding from prefix + s_<k then writes s_k..s_{m-1}
(each argmax is the next true token, so the greedy path stays on the text), so
ES is the share of the suffix that greedy decoding recovers given the rest.

Probabilistic discoverable extraction (Hayes et al. 2024, "Measuring memorization
through probabilistic discoverable extraction", §3): the probability that one
sample of a scheme S writes the whole suffix is

    p = prod_j P_S(s_j | prefix, s_<j),

where P_S is the model's next-token distribution after S's warping and
renormalisation, so one teacher-forced pass gives it exactly. An attacker who
draws n samples gets the suffix at least once with probability 1 - (1 - p)^n:
the sequence is (n, p)-discoverably extractable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..audit_settings import SamplingScheme

LN10 = math.log(10.0)


def scheme_logprobs(logits: torch.Tensor, scheme: SamplingScheme) -> torch.Tensor:
    """(..., V) log-probabilities of one sampling step under `scheme`; -inf outside the kept set.

    The order and the boundaries are transformers' (`generate(do_sample=True)`):
    logits / temperature; then top-k keeps every token scoring at least the k-th
    (ties kept); then top-p sorts ascending and drops the tokens whose cumulative
    probability is at most 1 - top_p, always keeping the most likely; the kept
    scores are renormalised by a softmax.
    """
    scores = logits.float() / scheme.temperature
    if scheme.top_k:
        kth = scores.topk(min(scheme.top_k, scores.shape[-1]), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if scheme.top_p is not None and scheme.top_p < 1:
        ascending, order = scores.sort(dim=-1)
        drop = ascending.softmax(-1).cumsum(-1) <= 1 - scheme.top_p
        drop[..., -1] = False
        scores = scores.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return scores.log_softmax(-1)


def suffix_logprob(logits: torch.Tensor, suffix: torch.Tensor, scheme: SamplingScheme) -> float:
    """log p, p = prod_j P_S(s_j | prefix, s_<j): `logits` (m, V) predict `suffix` (m,).

    Summed in float64 so that a long suffix loses no precision; -inf when a true
    token falls outside a kept set (the scheme can never write the suffix).
    """
    picked = scheme_logprobs(logits, scheme).gather(-1, suffix[:, None]).squeeze(-1)
    return float(picked.double().sum())


def log10_or_none(log_p: float) -> float | None:
    """log10 p, or None for p = 0 (JSON has no -inf)."""
    return None if log_p == -math.inf else log_p / LN10


def extraction_chance(log_p: float, n: int) -> float:
    """1 - (1 - p)^n from log p, without cancellation at either end.

    (1 - p)^n = exp(n log(1 - p)); log(1 - p) is log(-expm1(log p)) when p is
    near 1 and log1p(-p) when p is small (the two accurate branches of log1mexp),
    and 1 - exp(x) is -expm1(x).
    """
    if log_p == -math.inf:
        return 0.0
    if log_p >= 0.0:
        return 1.0
    log_miss = (
        math.log(-math.expm1(log_p)) if log_p > -math.log(2.0) else math.log1p(-math.exp(log_p))
    )
    return -math.expm1(n * log_miss)


def extraction_strength(hits: Sequence[bool]) -> float:
    """ES = 1 - k/m, k the first suffix position from which every argmax hits (m - ES·m
    is the length of the all-hit tail). `hits[j]`: the argmax after prefix + s_<j is s_j."""
    tail = 0
    for hit in reversed(hits):
        if not hit:
            break
        tail += 1
    return tail / len(hits)
