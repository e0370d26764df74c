"""Membership inference scores of one suffix, and the AUC of forget against holdout.

All four read the teacher-forced log-probabilities log p(s_j | prefix, s_<j) of
the m suffix tokens:

* LOSS (Yeom et al. 2018): the mean negative log-likelihood, nats per token.
* zlib (Carlini et al. 2021, "Extracting Training Data from Large Language
  Models", §6.1): the log-perplexity (= LOSS) divided by the zlib entropy, the
  length in bytes of `zlib.compress` (default level) of the suffix's UTF-8 text,
  as in the paper's released code: text that is easy to compress (repeats,
  numbers) gets low loss from any model, and the ratio discounts that.
* Min-K% (Shi et al. 2024, "Detecting Pretraining Data from Large Language
  Models", Eq. 1): the mean log-probability of the k% least likely tokens,
  max(1, floor(k·m)) of them, as in the paper's code.
* Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting
  Pre-Training Data from Large Language Models", Eq. 4): each token's
  (log p(s_j) - mu_j) / sigma_j, with mu_j = E_{z~p}[log p(z)] and sigma_j^2 =
  E_{z~p}[(log p(z) - mu_j)^2] under the same next-token distribution p; then
  the mean of the k% lowest.

MIA_SCORES orients each so that higher means "more likely a member"; the AUC is
then P(score of a forget sequence > score of a holdout sequence), ties 1/2.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch


def loss(logprobs: torch.Tensor) -> float:
    """Mean suffix NLL, nats per token."""
    return float(-logprobs.double().mean())


def zlib_entropy(text: str) -> int:
    """Bytes of the zlib-compressed UTF-8 text (Carlini et al. 2021's zlib entropy)."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_ratio(nll: float, text: str) -> float:
    """LOSS / zlib entropy: nats per token per compressed byte."""
    return nll / zlib_entropy(text)


def _lowest_mean(values: torch.Tensor, k: float) -> float:
    count = max(1, math.floor(k * len(values)))
    return float(values.double().sort().values[:count].mean())


def min_k(logprobs: torch.Tensor, k: float) -> float:
    """Min-K%: mean log-probability of the max(1, floor(k·m)) least likely tokens."""
    return _lowest_mean(logprobs, k)


def min_k_plus_plus(
    logprobs: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, k: float
) -> float:
    """Min-K%++: the k% lowest of (log p(s_j) - mu_j) / sigma_j, averaged."""
    return _lowest_mean((logprobs.double() - mu.double()) / sigma.double(), k)


def vocabulary_moments(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mu, sigma (each (...,)) of log p(z) for z ~ p, from `logp` (..., V) log-softmaxed.

    Tokens with p = 0 add nothing (0 · log 0 = 0). sigma is floored at 1e-12: a
    one-hot distribution has sigma 0, and its true token then scores 0 / 0.
    """
    p = logp.exp()
    mu = torch.where(p > 0, p * logp, 0.0).sum(-1)
    var = torch.where(p > 0, p * (logp - mu[..., None]) ** 2, 0.0).sum(-1)
    return mu, var.sqrt().clamp(min=1e-12)


# Each attack's score with "higher = more likely a member" (loss and zlib are low on members).
MIA_SCORES = {
    "loss": lambda row: -row["loss"],
    "zlib": lambda row: -row["zlib"],
    "min_k": lambda row: row["min_k"],
    "min_k_pp": lambda row: row["min_k_pp"],
}


def auc(members, nonmembers) -> float | None:
    """P(member score > non-member score) + P(equal) / 2: the Mann-Whitney U over n·m.

    From average ranks, U = (sum of the members' ranks) - n(n + 1)/2; a tie shares
    its group's mean rank, which counts each tied pair 1/2. None when a side is empty.
    """
    pos, neg = np.asarray(members, dtype=float), np.asarray(nonmembers, dtype=float)
    if not len(pos) or not len(neg):
        return None
    _, inverse, counts = np.unique(
        np.concatenate([pos, neg]), return_inverse=True, return_counts=True
    )
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]  # 1-based mean rank of each tie group
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def privleak(auc_model: float | None, auc_reference: float | None) -> float | None:
    """MUSE's PrivLeak (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation"):
    (AUC_M - AUC_R) / AUC_R; near 0 is "as if never trained", above 0 under-unlearned,
    below 0 over-unlearned (the forget set now stands out as less likely)."""
    if auc_model is None or not auc_reference:
        return None
    return (auc_model - auc_reference) / auc_reference
