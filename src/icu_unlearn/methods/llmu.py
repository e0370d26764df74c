"""LLMU (Yao et al., 2023): ascent on the forget suffixes, NLL of mismatched completions,
KL to the original model on normal data.

L = e1 L_fgt + e2 NLL(prefix + another text's suffix) + e3 KL(normal), with the
weights in `llmu:`; the normal data are the analogous pairs.
"""

from __future__ import annotations

from ..losses import kl_loss, nll_loss
from .base import (
    MISMATCH,
    PAIRS,
    Method,
    forget_logits,
    forget_term,
    original_suffix_logits,
    suffix_logits,
)


def _loss(model, original, batches, config):
    weights = config.llmu
    forget, mismatch, normal = batches["forget"], batches[MISMATCH], batches[PAIRS]
    l_fgt = forget_term(forget_logits(model, forget), forget)
    l_rdn = nll_loss(
        suffix_logits(model, mismatch),
        mismatch.input_ids,
        mismatch.attention_mask,
        mismatch.prefix_lengths,
    )
    l_kl = kl_loss(
        suffix_logits(model, normal),
        original_suffix_logits(original, normal),
        normal.attention_mask,
        normal.prefix_lengths,
    )
    loss = (
        weights.forget_weight * l_fgt + weights.mismatch_weight * l_rdn + weights.kl_weight * l_kl
    )
    return loss, {"fgt": l_fgt.item(), "mismatch": l_rdn.item(), "kl": l_kl.item()}


METHOD = Method(
    name="llmu",
    summary="ascent + NLL of mismatched completions + KL on normal data (Yao et al., 2023)",
    needs=lambda c: {PAIRS, MISMATCH},
    uses_original=lambda c: True,
    loss=_loss,
    ascends=True,
    targets=("ascent", "reference", "calibrated"),
)
