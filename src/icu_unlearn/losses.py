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
