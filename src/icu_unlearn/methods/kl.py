"""KL: gradient ascent on the forget suffixes + beta KL(P_theta0 || P_theta) on retain data.

The retain data are the forget samples' analogous pairs, so KL and ICU differ only
by ICU's L_lrn term and IUR: the comparison isolates what those add.
"""

from __future__ import annotations

from ..losses import kl_loss
from .base import PAIRS, Method, forget_logits, forget_term, original_suffix_logits, suffix_logits


def _loss(model, original, batches, config):
    forget, retain = batches["forget"], batches[PAIRS]
    l_fgt = forget_term(forget_logits(model, forget), forget)
    l_kl = kl_loss(
        suffix_logits(model, retain),
        original_suffix_logits(original, retain),
        retain.attention_mask,
        retain.prefix_lengths,
    )
    return l_fgt + config.beta * l_kl, {"fgt": l_fgt.item(), "kl": l_kl.item()}


METHOD = Method(
    name="kl",
    summary="gradient ascent + beta x KL to the original model on retain (analogous) data",
    needs=lambda c: {PAIRS},
    uses_original=lambda c: True,
    loss=_loss,
    ascends=True,
    targets=("ascent", "reference", "calibrated"),
)
