"""What a method module provides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids with each sample's t0."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    prefix_lengths: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    uses_pairs: Callable  # (config) -> bool: needs analogous learn samples
    uses_reference: Callable  # (config) -> bool: needs the frozen original model
    # (model, reference, forget: Batch, learn: Batch | None, config) -> (loss, {term: value})
    loss: Callable


def logits(model, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
