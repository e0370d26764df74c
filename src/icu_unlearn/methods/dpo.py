"""DPO (Rafailov et al., 2023) for unlearning: prefer a refusal over the true suffix.

Each forget prefix is paired with one of `dpo.refusals`; the frozen original model
is DPO's reference policy.
"""

from __future__ import annotations

from ..losses import dpo_loss, suffix_logprob_sum
from .base import REFUSAL, Method, reference_suffix_logits, suffix_logits


def _logps(model, reference, batch):
    args = (batch.input_ids, batch.attention_mask, batch.prefix_lengths)
    return (
        suffix_logprob_sum(suffix_logits(model, batch), *args),
        suffix_logprob_sum(reference_suffix_logits(reference, batch), *args),
    )


def _loss(model, reference, batches, config):
    chosen, chosen_ref = _logps(model, reference, batches[REFUSAL])
    rejected, rejected_ref = _logps(model, reference, batches["forget"])
    loss = dpo_loss(chosen, chosen_ref, rejected, rejected_ref, config.dpo.beta)
    return loss, {
        "dpo": loss.item(),
        "refusal_logratio": (chosen - chosen_ref).mean().item(),
        "forget_logratio": (rejected - rejected_ref).mean().item(),
    }


METHOD = Method(
    name="dpo",
    summary="prefer a refusal continuation over the true suffix, reference = original model",
    needs=lambda c: {REFUSAL},
    uses_reference=lambda c: True,
    loss=_loss,
)
