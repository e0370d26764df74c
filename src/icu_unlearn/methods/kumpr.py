"""KUMPR (Jang et al., 2023): gradient ascent on the forget sequences.

Their unlearning objective (Eq. 1 of Jang et al.) is the negative log-likelihood of
the whole sequence, every token x_t with t >= 1, maximised; ICU's L_fgt (its Eq. 1)
takes the suffix tokens only. `kumpr.suffix_only: true` gives the latter, which
isolates what ICU's other terms add. The published setting makes one update per
epoch: `batch_size: all`.
"""

from __future__ import annotations

import torch

from .base import Method, forget_logits, forget_term, logits, suffix_logits


def _loss(model, original, batches, config):
    forget = batches["forget"]
    if forget.target is not None:  # the reference target covers every position itself
        scored, t0 = forget_logits(model, forget), forget.prefix_lengths
    elif config.kumpr.suffix_only:
        scored, t0 = suffix_logits(model, forget), forget.prefix_lengths
    else:  # t0 = 1: every token but the first is scored, the prefix too
        scored, t0 = logits(model, forget), torch.ones_like(forget.prefix_lengths)
    l_fgt = forget_term(scored, forget, t0)
    return l_fgt, {"fgt": l_fgt.item()}


METHOD = Method(
    name="kumpr",
    summary="gradient ascent on the forget sequences, every token (Jang et al., 2023)",
    needs=lambda c: set(),
    uses_original=lambda c: False,
    loss=_loss,
    ascends=True,
    targets=("ascent", "reference", "calibrated"),
)
