"""What a method module provides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..losses import forget_loss, positions_needed

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
    # (B, T-1) per predicted token x_t: the log-probability under which the ascent term
    # leaves it out (stop.token_floor), -inf where there is none; None: no floor
    floor: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    needs: Callable  # (config) -> set of PAIRS / MISMATCH / REFUSAL
    uses_original: Callable  # (config) -> bool: needs the frozen original model (theta0)
    # (model, original, batches: {"forget": Batch, kind: Batch}, config) -> (loss, {term: value})
    loss: Callable
    refines: bool = False  # runs IUR (paper §3.5) after each epoch when refinement.enabled
    ascends: bool = False  # its loss has the ascent term L_fgt, which stop.token_floor bounds


def logits(model, batch: Batch) -> torch.Tensor:
    """(B, T, V): the logits of every position, for losses over whole sequences."""
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def suffix_logits(model, batch: Batch) -> torch.Tensor:
    """(B, K, V): the logits of the last K = T - min(t0) + 1 positions, the ones that
    predict the batch's suffix tokens (`losses.positions_needed`).

    The LM head runs on those positions only (`logits_to_keep`, a forward argument of
    every transformers causal LM, which peft, DDP, DeepSpeed and FSDP pass through as
    they are): on the paper's 50 + 50 tokens, half of the (B, T, V) logits are never made.

    The model still returns those K positions' logits whole, and the losses hold them
    for backward. Taking the hidden states and running the LM head chunk by chunk
    ourselves would not even hold those, but it calls the head outside the wrapped
    forward: under FSDP the root-owned head weight is sharded there, under ZeRO-3 it is
    gathered by the module's forward hooks, which a recompute in backward re-enters.
    Correct under every wrapper wins over that last (B, K, V).
    """
    keep = positions_needed(batch.prefix_lengths, batch.input_ids.shape[1])
    return model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep
    ).logits


def ascent_term(logits: torch.Tensor, batch: Batch, prefix_lengths=None) -> torch.Tensor:
    """L_fgt of the forget batch from its logits (`suffix_logits`, or `logits` with
    `prefix_lengths` of 1 to score the prefix too), under the batch's token floor."""
    t0 = batch.prefix_lengths if prefix_lengths is None else prefix_lengths
    return forget_loss(logits, batch.input_ids, batch.attention_mask, t0, floor=batch.floor)


def original_suffix_logits(original, batch: Batch) -> torch.Tensor:
    """`suffix_logits` of the frozen original model, without a graph."""
    with torch.no_grad():
        return suffix_logits(original, batch)
