"""ICU (paper §3): forget by gradient ascent, learn the analogous pair, stay close to the original.

L = L_fgt + alpha L_lrn + beta L_kl (Eq. 6), the learn terms on each forget
sample's k nearest analogous samples. alpha = 0 and beta = 0 are the ablations,
refinement.enabled = false the one without IUR.
"""

from __future__ import annotations

from ..losses import icu_loss, kl_loss, nll_loss
from .base import PAIRS, Method, forget_logits, forget_term, original_suffix_logits, suffix_logits


def _loss(model, original, batches, config):
    forget = batches["forget"]
    l_fgt = forget_term(forget_logits(model, forget), forget)
    zero = l_fgt.new_zeros(())
    l_lrn, l_kl = zero, zero
    if PAIRS in batches:
        learn = batches[PAIRS]
        learn_logits = suffix_logits(model, learn)
        if config.alpha > 0:
            l_lrn = nll_loss(
                learn_logits, learn.input_ids, learn.attention_mask, learn.prefix_lengths
            )
        if config.beta > 0:
            l_kl = kl_loss(
                learn_logits,
                original_suffix_logits(original, learn),
                learn.attention_mask,
                learn.prefix_lengths,
            )
    loss = icu_loss(l_fgt, l_lrn, l_kl, config.alpha, config.beta)
    return loss, {"fgt": l_fgt.item(), "lrn": l_lrn.item(), "kl": l_kl.item()}


METHOD = Method(
    name="icu",
    summary="Iterative Contrastive Unlearning: ascent + analogous NLL + KL, with IUR (the paper)",
    needs=lambda c: {PAIRS} if c.alpha > 0 or c.beta > 0 else set(),
    uses_original=lambda c: c.beta > 0,
    loss=_loss,
    refines=True,
    ascends=True,
    targets=("ascent", "reference", "calibrated"),
)
