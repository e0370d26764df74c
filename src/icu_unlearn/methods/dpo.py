"""DPO (Rafailov et al., 2023) for unlearning: prefer a refusal over the true suffix.

Each forget prefix is paired with one of `dpo.refusals`; the frozen original model
is the policy DPO takes its log-ratios against (the paper's pi_ref).
"""

from __future__ import annotations

from ..losses import dpo_loss, suffix_logprob_sum
from .base import REFUSAL, Method, original_suffix_logits, suffix_logits


def _logps(model, original, batch):
    args = (batch.input_ids, batch.attention_mask, batch.prefix_lengths)
    return (
        suffix_logprob_sum(suffix_logits(model, batch), *args),
        suffix_logprob_sum(original_suffix_logits(original, batch), *args),
    )


def _loss(model, original, batches, config):
    chosen, chosen_ref = _logps(model, original, batches[REFUSAL])
    rejected, rejected_ref = _logps(model, original, batches["forget"])
    loss = dpo_loss(chosen, chosen_ref, rejected, rejected_ref, config.dpo.beta)
    return loss, {
        "dpo": loss.item(),
        "refusal_logratio": (chosen - chosen_ref).mean().item(),
        "forget_logratio": (rejected - rejected_ref).mean().item(),
    }


METHOD = Method(
    name="dpo",
    summary="prefer a refusal continuation over the true suffix, against the original model",
    needs=lambda c: {REFUSAL},
    uses_original=lambda c: True,
    loss=_loss,
)
