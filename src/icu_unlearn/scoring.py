"""The scoring engine: one teacher-forced pass and one greedy decoding from its cache, behind
every score of a sequence (MA, suffix NLL, token log-probabilities, the audit's suffix
statistics with the Min-K%++ moments, EL's continuations and the greedy one from t0).

A sequence x_0..x_{T-1} is right-padded into a batch (its positions stay 0..T-1); the
logits at position t predict x_{t+1}. Batches go longest first (`generation.longest_first`:
padding stays small, and the largest batch fails first when memory is short), and every
result comes back in the caller's order. EL and MA batch in the caller's order instead
(`metrics.memorization.memorization_pass`): a sequence's logits change in their last bits
with the other sequences of its batch, and the run, `eval` and `audit` must agree.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from .generation import longest_first as longest_first_batches
from .generation import model_device, right_pad
from .precision import autocast


@dataclass
class TeacherForced:
    """What one teacher-forced pass over N sequences gives, in the caller's order; a field
    is None where it was not asked for."""

    greedy: torch.Tensor  # (N, W) the argmax after each position; meaningless past T_i - 1
    hits: list[list[bool]]  # hits[i][t - 1]: the argmax after x[:t] is x_t, t = 1..T-1
    suffix_nll: list[float] | None  # mean -log P(x_t | x_<t) over t >= t0, nats a token
    token_logprobs: list[torch.Tensor] | None  # (T-1,) log P(x_t | x_<t), t = 1..T-1, float32
    suffix: list[Any] | None  # what `per_suffix` made of each sequence's suffix

    @property
    def ma(self) -> list[float]:
        """Memorization accuracy (Eq. 9) of each sequence."""
        return [accuracy(h) for h in self.hits]


def accuracy(hits: Sequence[bool]) -> float:
    """Eq. 9: the share of positions where the greedy next token is the true one."""
    return sum(hits) / len(hits)


def next_token_hits(sequence: Sequence[int], greedy_next: Sequence[int]) -> list[bool]:
    """hits[t - 1]: the greedy token after x[:t] (`greedy_next[t - 1]`) is x_t, t = 1..T-1."""
    return [g == x for g, x in zip(greedy_next, sequence[1:], strict=True)]


def next_token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, T-1) float32 log P(ids[:, t] | ids[:, :t]) from the (B, T, V) logits of `ids`."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


@torch.inference_mode()
def teacher_forced(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    pad_token_id: int,
    prefix_lengths: Sequence[int] | None = None,
    batch_size: int = 8,
    *,
    suffix_nll: bool = False,
    token_logprobs: bool = False,
    per_suffix: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    longest_first: bool = True,
    precision: str = "fp32",
) -> TeacherForced:
    """One forward pass per batch of `batch_size` sequences, and every number asked of it.

    The greedy next tokens and their hits (MA) always; `suffix_nll` and `token_logprobs`
    on request; `per_suffix(logits, targets)` is given each sequence's float32 (m, V)
    logits that predict its suffix x_t0..x_{T-1} and those m tokens, on the model's
    device (the audit's statistics). The suffix needs `prefix_lengths` (t0 each).
    `longest_first=False`: batches of consecutive sequences, in the caller's order.
    `precision` "bf16": the passes under autocast (`precision.autocast`); the log-probs
    and statistics are still taken in float32, of bf16-rounded logits.
    """
    if (suffix_nll or per_suffix is not None) and prefix_lengths is None:
        raise ValueError("suffix scores need the prefix lengths")
    device = model_device(model)
    seqs = [list(s) for s in sequences]
    lengths = [len(s) for s in seqs]
    greedy = torch.zeros((len(seqs), max(lengths, default=0)), dtype=torch.long)
    nll: list[float] = [0.0] * len(seqs)
    logprobs: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    suffix: list[Any] = [None] * len(seqs)
    if longest_first:
        batches = longest_first_batches(lengths, batch_size)
    else:  # consecutive sequences
        starts = range(0, len(seqs), batch_size)
        batches = [list(range(k, min(k + batch_size, len(seqs)))) for k in starts]
    for batch in batches:
        ids, mask = right_pad([seqs[i] for i in batch], pad_token_id, device)
        with autocast(precision, device):
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, W_b, V)
        greedy[batch, : ids.shape[1]] = logits.argmax(-1).cpu()
        picked = None
        if suffix_nll or token_logprobs:
            picked = next_token_logprobs(logits, ids).cpu()  # (B, W_b - 1)
        for row, i in enumerate(batch):
            if token_logprobs:
                logprobs[i] = picked[row, : lengths[i] - 1]
            if suffix_nll:
                t0 = prefix_lengths[i]
                nll[i] = -float(picked[row, t0 - 1 : lengths[i] - 1].double().mean())
            if per_suffix is not None:
                t0 = prefix_lengths[i]
                suffix[i] = per_suffix(
                    logits[row, t0 - 1 : lengths[i] - 1].float(), ids[row, t0 : lengths[i]]
                )
        del logits
    return TeacherForced(
        greedy=greedy,
        hits=[next_token_hits(s, greedy[i, : len(s) - 1].tolist()) for i, s in enumerate(seqs)],
        suffix_nll=nll if suffix_nll else None,
        token_logprobs=logprobs if token_logprobs else None,
        suffix=suffix if per_suffix is not None else None,
    )


@torch.inference_mode()
def greedy_continuations(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    greedy: torch.Tensor,
    starts: Sequence[tuple[int, int]],
    pad_token_id: int,
    decode_batch_size: int = 128,
    precision: str = "fp32",
) -> dict[tuple[int, int], list[int]]:
    """The greedy continuation of x[:q] of sequence b, T_b - q tokens, for every (b, q).

    One cache pass over `sequences` (one batch; `greedy` their (B, W) next-token argmax
    from the teacher-forced pass), then every row decodes from that cache: row (b, q)
    attends to sequence b's cached keys at positions < q (no re-prefill), its new tokens
    take positions q, q+1, ..., and its first token is the pass's argmax. Rows decode
    `decode_batch_size` at a time, longest remaining first, so that finished rows leave
    the batch (once they are half of it). `precision` "bf16": every pass under one autocast
    context, so that the weights are cast to bfloat16 once, not at every step.
    """
    with autocast(precision, model_device(model)):
        return _continuations(model, sequences, greedy, starts, pad_token_id, decode_batch_size)


def _continuations(model, sequences, greedy, starts, pad_token_id, decode_batch_size):
    device = model_device(model)
    # logits_to_keep=1 keeps the pass from holding (B, W, V) logits: only the cache is used
    ids, mask = right_pad(sequences, pad_token_id, device)
    cache = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1).cache
    width = cache.get_seq_length()
    remaining = [len(sequences[b]) - q - 1 for b, q in starts]
    decoded: dict[tuple[int, int], list[int]] = {}
    for rows in longest_first_batches(remaining, decode_batch_size):
        chunk = [starts[r] for r in rows]
        steps = [remaining[r] for r in rows]  # non-increasing
        seq_index = torch.tensor([b for b, _ in chunk], device=device)
        positions = torch.tensor([q for _, q in chunk], device=device)
        tok = torch.tensor([int(greedy[b, q - 1]) for b, q in chunk], device=device)
        gen = [[int(t)] for t in tok.tolist()]
        # A copy of the cache's structure only: selecting rows re-binds each layer's
        # tensors, so the batch's cache stays intact for the next chunk without a deep copy.
        row_cache = copy.copy(cache)
        row_cache.layers = [copy.copy(layer) for layer in cache.layers]
        row_cache.batch_select_indices(seq_index)
        # Cached positions at or past every row's q are masked for all rows: drop them,
        # so attention and cache growth cost what the rows need, not the longest sequence.
        keep = int(positions.max())
        if keep < width:
            row_cache.crop(keep - width)
        base = (torch.arange(keep, device=device)[None] < positions[:, None]).long()  # (R, keep)
        active = len(chunk)
        for s in range(steps[0]):
            while steps[active - 1] <= s:  # sorted: finished rows are the tail
                active -= 1
            # Dropping finished rows copies every layer's cache, which on a CPU cost more
            # than decoding the finished rows a while longer: drop them once they are half
            # the batch. Their tokens are computed and ignored.
            if active <= tok.shape[0] // 2:
                row_cache.batch_select_indices(torch.arange(active, device=device))
                base, tok, positions = base[:active], tok[:active], positions[:active]
            attention = torch.cat([base, base.new_ones(base.shape[0], s + 1)], dim=1)
            out = model(
                input_ids=tok[:, None],
                attention_mask=attention,
                position_ids=(positions + s)[:, None],
                cache=row_cache,
                use_cache=True,
            )
            row_cache = out.cache
            tok = out.logits[:, -1].argmax(-1)
            for r, t in enumerate(tok.tolist()[:active]):
                gen[r].append(t)
        for r, row in enumerate(chunk):
            decoded[row] = gen[r]
    return decoded
