"""Membership inference scores of one suffix, the AUC of forget against holdout, PrivLeak.

Each attack reads the teacher-forced log-probabilities log p(s_j | prefix, s_<j)
of the m suffix tokens:

* LOSS (Yeom et al. 2018): the mean negative log-likelihood, nats per token.
* zlib (Carlini et al. 2021, "Extracting Training Data from Large Language
  Models", §6.1): the log-perplexity (= LOSS) divided by the zlib entropy, the
  length in bytes of `zlib.compress` (default level) of the suffix's UTF-8 text,
  as in the paper's released code: text that is easy to compress (repeats,
  numbers) gets low loss from any model, and the ratio discounts that.
* Min-K% (Shi et al. 2024, "Detecting Pretraining Data from Large Language
  Models", Eq. 1): the mean log-probability of the k% least likely tokens,
  max(1, floor(k·n)) of the n tokens scored, as in the paper's code.
* Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting
  Pre-Training Data from Large Language Models", Eq. 4): each token's
  (log p(s_j) - mu_j) / sigma_j, with mu_j = E_{z~p}[log p(z)] and sigma_j^2 =
  E_{z~p}[(log p(z) - mu_j)^2] under the same next-token distribution p; then
  the mean of the k% lowest.

The settings are open-unlearning's (`src/evals/metrics/mia/`, `configs/eval/*_metrics/
mia_min_k*.yaml`), so that the AUCs and PrivLeak compare with the numbers published
with it: k = 0.4; Min-K% and Min-K%++ score the suffix without its last token (their
`tokenwise_logprobs` drops the last labelled token, meant for an end-of-sequence token in
question-answer data, and so drops the last text token of MUSE's plain-text sets, which
have none; our suffixes have none either), LOSS and zlib every token; Min-K%++'s
variance is clamped at 1e-6.

MIA_SCORES orients each so that higher means "more likely a member"; the AUC is
then P(score of a forget sequence > score of a holdout sequence), ties 1/2.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

# Min-K%++'s sigma^2 floor, open-unlearning's: a one-hot next-token distribution has
# variance 0, and its true token would score 0 / 0.
VARIANCE_FLOOR = 1e-6


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
    """Min-K%: mean log-probability of the max(1, floor(k·n)) least likely of n tokens."""
    return _lowest_mean(logprobs, k)


def min_k_plus_plus(
    logprobs: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, k: float
) -> float:
    """Min-K%++: the k% lowest of (log p(s_j) - mu_j) / sigma_j, averaged."""
    return _lowest_mean((logprobs.double() - mu.double()) / sigma.double(), k)


def vocabulary_moments(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mu, sigma (each (...,)) of log p(z) for z ~ p, from `logp` (..., V) log-softmaxed.

    Tokens with p = 0 add nothing (0 · log 0 = 0). sigma^2 is clamped at VARIANCE_FLOOR
    (sigma >= 1e-3), as open-unlearning clamps it.
    """
    p = logp.exp()
    mu = torch.where(p > 0, p * logp, 0.0).sum(-1)
    var = torch.where(p > 0, p * (logp - mu[..., None]) ** 2, 0.0).sum(-1)
    return mu, var.clamp(min=VARIANCE_FLOOR).sqrt()


def suffix_membership(
    logprobs: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, text: str, k: float
) -> dict:
    """The four scores of one suffix (m tokens, `text` its text): LOSS and zlib over all m,
    Min-K% and Min-K%++ over the first m - 1 (the one token when m = 1)."""
    nll = loss(logprobs)
    kept = slice(None, -1) if len(logprobs) > 1 else slice(None)
    return {
        "loss": nll,
        "zlib": zlib_ratio(nll, text),
        "min_k": min_k(logprobs[kept], k),
        "min_k_pp": min_k_plus_plus(logprobs[kept], mu[kept], sigma[kept], k),
    }


# Each attack's score with "higher = more likely a member" (loss and zlib are low on members).
MIA_SCORES = {
    "loss": lambda row: -row["loss"],
    "zlib": lambda row: -row["zlib"],
    "min_k": lambda row: row["min_k"],
    "min_k_pp": lambda row: row["min_k_pp"],
}

# The attack of the headline PrivLeak: MUSE's and open-unlearning's, Min-K% (k = 0.4 there).
PRIVLEAK_ATTACK = "min_k"


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
    """MUSE's PrivLeak (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation"), in
    percent, the reference model standing for MUSE's retrained one.

    MUSE labels the forget set 0 and the holdout 1 on Min-K% itself, so its AUC' is 1 - ours
    (open-unlearning reports ours and converts), and PrivLeak = (AUC'_M - AUC'_R) / AUC'_R
    x 100 reads, in our orientation, (AUC_R - AUC_M) / (1 - AUC_R) x 100. 0 is "as if never
    trained"; positive is over-unlearned (the forget set less likely than never-seen text,
    more so than under the reference), negative under-unlearned, -100 a model under which
    every forget sequence outscores every holdout one. None without both AUCs, or when
    AUC_R = 1 (the reference itself separates them perfectly: no scale to measure on).
    """
    if auc_model is None or auc_reference is None or auc_reference == 1:
        return None
    return (auc_reference - auc_model) / (1 - auc_reference) * 100
