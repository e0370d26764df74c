"""What a method module provides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# The data a method can ask the engine for, besides the forget batch itself. Each is
# built once per run, per forget sample, so a sample always travels with its own.
PAIRS = "pairs"  # its k analogous samples from the pool (paper Eq. 2): ICU, KL, LLMU
MISMATCH = "mismatch"  # its prefix continued by another pool text's suffix: LLMU
REFUSAL = "refusal"  # its prefix continued by a refusal such as "I don't know.": DPO


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
    needs: Callable  # (config) -> set of PAIRS / MISMATCH / REFUSAL
    uses_reference: Callable  # (config) -> bool: needs the frozen original model
    # (model, reference, batches: {"forget": Batch, kind: Batch}, config) -> (loss, {term: value})
    loss: Callable
    refines: bool = False  # runs IUR (paper §3.5) after each epoch when refinement.enabled


def logits(model, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def reference_logits(reference, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return logits(reference, batch)
