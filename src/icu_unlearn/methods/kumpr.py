"""KUMPR (Jang et al., 2023): gradient ascent on the forget suffixes only (Eq. 1)."""

from __future__ import annotations

from ..losses import forget_loss
from .base import Batch, Method, logits


def _loss(model, reference, forget: Batch, learn: Batch | None, config):
    l_fgt = forget_loss(
        logits(model, forget), forget.input_ids, forget.attention_mask, forget.prefix_lengths
    )
    return l_fgt, {"fgt": l_fgt.item()}


METHOD = Method(
    name="kumpr",
    summary="gradient ascent on the forget suffixes (Jang et al., 2023)",
    uses_pairs=lambda c: False,
    uses_reference=lambda c: False,
    loss=_loss,
)
