"""Pure loss functions over suffix tokens (t >= t0), padding masked.

Shapes: logits (B, T, V) predict token t+1 at position t; input_ids and
attention_mask (B, T), right-padded; prefix_lengths (B,) holds each sample's t0.
Every loss is a per-sample mean over that sample's suffix tokens, then a mean
over samples: a sample's weight does not depend on its length or on which
other samples share its batch, so batch 8 x accumulation 1 equals 4 x 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def suffix_mask(attention_mask: torch.Tensor, prefix_lengths: torch.Tensor) -> torch.Tensor:
    """(B, T-1) float mask of the predicted tokens x_t with t >= t0 that are not padding."""
    positions = torch.arange(1, attention_mask.shape[1], device=attention_mask.device)  # t
    is_suffix = positions[None, :] >= prefix_lengths[:, None]
    return (is_suffix & attention_mask[:, 1:].bool()).float()


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T-1) log P(x_t | x_<t) for t = 1..T-1."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sample's masked positions, then over samples."""
    per_sample = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_sample.mean()


def sequence_logprob(logits, input_ids, attention_mask, prefix_lengths) -> torch.Tensor:
    """Mean log-likelihood of the suffix tokens, per sample: (B,)."""
    mask = suffix_mask(attention_mask, prefix_lengths)
    return (token_logprobs(logits, input_ids) * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def suffix_logprob_sum(logits, input_ids, attention_mask, prefix_lengths) -> torch.Tensor:
    """log P(suffix | prefix) = sum of the suffix tokens' log-probabilities, per sample: (B,).

    DPO and NPO compare whole-sequence likelihoods with the reference model, so they
    sum over tokens; the ascent and NLL terms average instead.
    """
    mask = suffix_mask(attention_mask, prefix_lengths)
    return (token_logprobs(logits, input_ids) * mask).sum(-1)


def forget_loss(logits, input_ids, attention_mask, prefix_lengths) -> torch.Tensor:
    """L_fgt (Eq. 1): + mean log P(x_t | x_<t) over suffix tokens. Minimising it is
    gradient ascent on the negative log-likelihood of the forget samples."""
    mask = suffix_mask(attention_mask, prefix_lengths)
    return _masked_mean(token_logprobs(logits, input_ids), mask)


def nll_loss(logits, input_ids, attention_mask, prefix_lengths) -> torch.Tensor:
    """L_lrn (Eq. 3): mean negative log-likelihood of the suffix tokens."""
    return -forget_loss(logits, input_ids, attention_mask, prefix_lengths)


def kl_loss(logits, reference_logits, attention_mask, prefix_lengths) -> torch.Tensor:
    """L_kl (Eq. 4): KL(P_theta0 || P_theta) per suffix token, padding masked.

    The reference logits come from the frozen original model on the same batch,
    computed on the fly (no stored softmaxes).
    """
    mask = suffix_mask(attention_mask, prefix_lengths)
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    ref_logp = F.log_softmax(reference_logits[:, :-1].float(), dim=-1)
    per_token = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # (B, T-1)
    return _masked_mean(per_token, mask)


def icu_loss(l_fgt: torch.Tensor, l_lrn: torch.Tensor, l_kl: torch.Tensor, alpha, beta):
    """Eq. 6: L = L_fgt + alpha L_lrn + beta L_kl."""
    return l_fgt + alpha * l_lrn + beta * l_kl


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al., 2024): (2 / beta) log(1 + (pi_theta / pi_ref)^beta) on the
    forget suffixes, mean over samples. `logp`, `ref_logp`: (B,) sequence log-likelihoods."""
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()


def dpo_loss(
    chosen_logp, chosen_ref_logp, rejected_logp, rejected_ref_logp, beta: float
) -> torch.Tensor:
    """DPO (Rafailov et al., 2023): -log sigmoid(beta (chosen log-ratio - rejected log-ratio)),
    mean over samples. Here chosen = a refusal, rejected = the true suffix."""
    margin = (chosen_logp - chosen_ref_logp) - (rejected_logp - rejected_ref_logp)
    return F.softplus(-beta * margin).mean()
