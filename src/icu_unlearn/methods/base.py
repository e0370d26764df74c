"""What a method module provides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..losses import (
    calibrated_loss,
    forget_loss,
    positions_needed,
    prefix_level_loss,
    prefix_mask,
    reference_kl_loss,
    suffix_mask,
)

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
    # forget_target: reference. (B, T, V): at each position 0 .. len-2 the reference
    # model's next-token log-probabilities (zeros past them, masked); None: not this target
    target: torch.Tensor | None = None
    # (B,): the suffix NLL, nats a token, each sample is pulled to: the holdout's
    # (calibrated) or the reference's (reference; None: from `target`), plus any push
    level: torch.Tensor | None = None
    # reference: the weight of the prefix's level term (`losses.prefix_level_loss`); 0: none
    prefix_weight: float = 0.0

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
    # the forget targets its forget term can take (`forget_target`): "ascent" is the
    # method's own term; "reference" / "calibrated" replace it (`forget_term`)
    targets: tuple[str, ...] = ("ascent",)


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


def forget_term(logits: torch.Tensor, batch: Batch, prefix_lengths=None) -> torch.Tensor:
    """The forget batch's forget term from its logits (`suffix_logits`, or `logits` with
    `prefix_lengths` of 1 to ascend on the prefix too), by the run's `forget_target`:

    * ascent: L_fgt (Eq. 1), under the batch's token floor;
    * reference: KL(P_ref || P_theta) per token toward the reference model (every
      position: give `forget_logits`), plus the Huber distance of the suffix NLL to the
      reference's per sample (and, weighted by `prefix_weight`, the prefix NLL's);
    * calibrated: |suffix NLL - the holdout's level| per sample.

    The likelihood levels are the suffix's, whatever `prefix_lengths` says.
    """
    if batch.target is not None:
        kept = batch.target[:, batch.target.shape[1] - logits.shape[1] :].float()
        # every position from the first: MA (Eq. 9) counts the prefix's tokens too, and a
        # prefix the model still completes is itself a trace of the record
        every = torch.ones_like(batch.prefix_lengths)
        kl = reference_kl_loss(logits, kept, batch.attention_mask, every)
        # KL(P_ref || P) barely weighs the true token once P puts little mass on it, so
        # alone it lets the suffix fall far below the reference's likelihood (measured on
        # the tiny scenario: 21 nats a token against the reference's 10.8); the level term
        # holds the suffix NLL at the reference's
        level = reference_suffix_nll(batch) if batch.level is None else batch.level
        args = (logits, batch.input_ids, batch.attention_mask, batch.prefix_lengths)
        loss = kl + calibrated_loss(*args, level)
        if batch.prefix_weight:
            prefix = prefix_level_loss(*args, reference_prefix_nll(batch))
            loss = loss + batch.prefix_weight * prefix
        return loss
    if batch.level is not None:
        return calibrated_loss(
            logits, batch.input_ids, batch.attention_mask, batch.prefix_lengths, batch.level
        )
    t0 = batch.prefix_lengths if prefix_lengths is None else prefix_lengths
    return forget_loss(logits, batch.input_ids, batch.attention_mask, t0, floor=batch.floor)


def forget_logits(model, batch: Batch) -> torch.Tensor:
    """The logits the forget batch's `forget_term` needs: every position's for the
    reference target, the suffix's (`suffix_logits`) otherwise."""
    return logits(model, batch) if batch.target is not None else suffix_logits(model, batch)


def _reference_token_logprobs(batch: Batch) -> torch.Tensor:
    """(B, T-1) log P_ref(x_t | x_<t) of each true token, from the batch's reference target."""
    targets = batch.input_ids[:, 1:, None]  # (B, T-1, 1): x_t predicted at position t-1
    return batch.target[:, :-1].float().gather(-1, targets).squeeze(-1)


def reference_suffix_logprob_sum(batch: Batch) -> torch.Tensor:
    """(B,) log P_ref(suffix | prefix) from the batch's reference target: NPO's pi_ref
    when its forget target is the reference model."""
    logp = _reference_token_logprobs(batch)
    return (logp * suffix_mask(batch.attention_mask, batch.prefix_lengths)).sum(-1)


def reference_prefix_nll(batch: Batch) -> torch.Tensor:
    """(B,) the reference model's prefix NLL (x_1 .. x_{t0-1}), nats a token, from the
    batch's target."""
    prefix = prefix_mask(batch.attention_mask, batch.prefix_lengths)
    return -(_reference_token_logprobs(batch) * prefix).sum(-1) / prefix.sum(-1).clamp(min=1)


def reference_suffix_nll(batch: Batch) -> torch.Tensor:
    """(B,) the reference model's suffix NLL, nats a token, from the batch's target."""
    count = suffix_mask(batch.attention_mask, batch.prefix_lengths).sum(-1).clamp(min=1)
    return -reference_suffix_logprob_sum(batch) / count


def original_suffix_logits(original, batch: Batch) -> torch.Tensor:
    """`suffix_logits` of the frozen original model, without a graph."""
    with torch.no_grad():
        return suffix_logits(original, batch)
