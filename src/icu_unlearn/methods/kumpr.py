"""KUMPR (Jang et al., 2023): gradient ascent on the forget suffixes only (Eq. 1).

The published setting makes one update per epoch: `batch_size: all`.
"""

from __future__ import annotations

from ..losses import forget_loss
from .base import Method, logits


def _loss(model, reference, batches, config):
    forget = batches["forget"]
    l_fgt = forget_loss(
        logits(model, forget), forget.input_ids, forget.attention_mask, forget.prefix_lengths
    )
    return l_fgt, {"fgt": l_fgt.item()}


METHOD = Method(
    name="kumpr",
    summary="gradient ascent on the forget suffixes (Jang et al., 2023)",
    needs=lambda c: set(),
    uses_reference=lambda c: False,
    loss=_loss,
)
