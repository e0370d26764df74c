"""NPO (Zhang et al., 2024): DPO without the preferred side, the true suffix dispreferred.

Its pi_ref is the original model; with `forget_target: reference`, the reference model
that never saw the forget set: the loss then saturates as the suffix falls below the
never-trained model's likelihood instead of below the original's.
"""

from __future__ import annotations

from ..losses import npo_loss, suffix_logprob_sum
from .base import Method, original_suffix_logits, reference_suffix_logprob_sum, suffix_logits


def _loss(model, original, batches, config):
    forget = batches["forget"]
    args = (forget.input_ids, forget.attention_mask, forget.prefix_lengths)
    logp = suffix_logprob_sum(suffix_logits(model, forget), *args)
    if forget.target is not None:  # forget_target: reference: the never-trained model
        ref_logp = reference_suffix_logprob_sum(forget)
    else:  # the paper's NPO: the original model
        ref_logp = suffix_logprob_sum(original_suffix_logits(original, forget), *args)
    loss = npo_loss(logp, ref_logp, config.npo.beta)
    return loss, {"npo": loss.item(), "forget_logratio": (logp - ref_logp).mean().item()}


METHOD = Method(
    name="npo",
    summary="negative preference optimisation: DPO without the preferred side (Zhang et al., 2024)",
    needs=lambda c: set(),
    uses_original=lambda c: c.resolved_forget_target() != "reference",
    loss=_loss,
    targets=("ascent", "reference"),
)
