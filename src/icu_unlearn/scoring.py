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
from transformers.cache_utils import DynamicLayer

from .generation import longest_first as longest_first_batches
from .generation import model_device, right_pad
from .precision import inference


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
    `precision` "bf16": the passes on bfloat16 weights (`precision.inference`); the
    log-probs and statistics are still taken in float32, of bf16-rounded logits.
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
    with inference(precision, model):  # one bfloat16 cast of the weights (bf16)
        for batch in batches:
            ids, mask = right_pad([seqs[i] for i in batch], pad_token_id, device)
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
    drafts: dict[tuple[int, int], list[int]] | None = None,
) -> dict[tuple[int, int], list[int]]:
    """The greedy continuation of x[:q] of sequence b, T_b - q tokens, for every (b, q).

    One cache pass over `sequences` (one batch; `greedy` their (B, W) next-token argmax
    from the teacher-forced pass), then every row decodes from that cache: row (b, q)
    attends to sequence b's cached keys at positions < q (no re-prefill), its new tokens
    take positions q, q+1, ..., and its first token is the pass's argmax. Rows decode
    `decode_batch_size` at a time, longest remaining first, so that finished rows leave
    the batch (once they are half of it). `precision` "bf16": every pass on bfloat16 weights
    cast once (`precision.inference`), not at every step.

    `drafts[(b, q)]`, where given, is a guess of the continuation (last epoch's, when the
    model has moved by a few steps since): one pass over the guess verifies it, the
    longest prefix of it on which the model's argmax agrees is kept, and decoding goes
    on from the first disagreement only (greedy speculative decoding: what comes back is
    the greedy continuation whatever the guess; a good guess saves the decoding steps).
    """
    # a draft whose first token is not the pass's argmax after x[:q] holds nowhere: the
    # row decodes plainly instead of paying for a pass over it
    drafts = {
        (b, q): d for (b, q), d in (drafts or {}).items() if d and d[0] == int(greedy[b, q - 1])
    }
    with inference(precision, model):
        return _continuations(
            model, sequences, greedy, starts, pad_token_id, decode_batch_size, drafts
        )


# Rows a verification pass takes at once, longest draft first: its drafts are padded to
# the longest, and on a CPU the pass is bound by arithmetic, not by reading the weights, so
# that padding is paid in full. Measured on SmolLM2-135M (8 forgotten sequences, 77 rows
# of up to 50 tokens, drafts that hold, one thread): 13.7 s at 128 rows a pass, 11.1 at
# 32, 10.3 at 16, 10.1 at 8, against plain decoding's 19.9 at 128 rows a step.
VERIFY_ROWS = 16


def _continuations(model, sequences, greedy, starts, pad_token_id, decode_batch_size, drafts):
    device = model_device(model)
    # logits_to_keep=1 keeps the pass from holding (B, W, V) logits: only the cache is used
    ids, mask = right_pad(sequences, pad_token_id, device)
    cache = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1).cache
    remaining = [len(sequences[b]) - q - 1 for b, q in starts]
    decoded: dict[tuple[int, int], list[int]] = {}
    for drafted in (False, True):
        rows = [r for r, start in enumerate(starts) if (start in drafts) == drafted]
        size = min(decode_batch_size, VERIFY_ROWS) if drafted else decode_batch_size
        for picked in longest_first_batches([remaining[r] for r in rows], size):
            chunk = [starts[rows[i]] for i in picked]
            if drafted:
                found = _verify_and_decode(model, cache, chunk, greedy, sequences, drafts)
            else:
                found = _decode_chunk(model, cache, chunk, greedy, sequences)
            decoded |= found
    return decoded


def _row_cache(cache, seq_index: torch.Tensor, positions: torch.Tensor):
    """The batch's cache for one chunk of rows (row i: sequence seq_index[i]), cropped to
    the longest prefix any row attends to, and the (R, keep) mask of its positions < q."""
    device = seq_index.device
    # A copy of the cache's structure only: selecting rows re-binds each layer's
    # tensors, so the batch's cache stays intact for the next chunk without a deep copy.
    row_cache = copy.copy(cache)
    row_cache.layers = [copy.copy(layer) for layer in cache.layers]
    row_cache.batch_select_indices(seq_index)
    # Cached positions at or past every row's q are masked for all rows: drop them,
    # so attention and cache growth cost what the rows need, not the longest sequence.
    width = cache.get_seq_length()
    keep = int(positions.max())
    if keep < width:
        row_cache.crop(keep - width)
    base = (torch.arange(keep, device=device)[None] < positions[:, None]).long()  # (R, keep)
    return row_cache, base


def _decode_chunk(model, cache, chunk, greedy, sequences) -> dict[tuple[int, int], list[int]]:
    """Plain greedy decoding of one chunk of rows (b, q), longest remaining first."""
    device = model_device(model)
    seq_index = torch.tensor([b for b, _ in chunk], device=device)
    positions = torch.tensor([q for _, q in chunk], device=device)
    row_cache, base = _row_cache(cache, seq_index, positions)
    tok = torch.tensor([int(greedy[b, q - 1]) for b, q in chunk], device=device)
    steps = [len(sequences[b]) - q - 1 for b, q in chunk]  # non-increasing
    gen = _decode(model, row_cache, base, tok, positions, steps)
    return {row: gen[r] for r, row in enumerate(chunk)}


class _ReservedLayer(DynamicLayer):
    """A layer of a decoding cache with room reserved for the tokens still to come: each
    step writes its keys and values into the room, where transformers' layer concatenates
    the whole cache into a new tensor, a copy of every cached token of every layer at
    every step: memory traffic that costs most where the memory is shared with other work
    (benchmarks/results/decode_cache_2threads.md). `keys` and `values` are views of the filled
    part; attention reads the same numbers either way (tested bit for bit)."""

    def __init__(self, layer: DynamicLayer, room: int):
        super().__init__()
        filled = layer.keys.shape[-2]
        shape = (*layer.keys.shape[:-2], filled + room, layer.keys.shape[-1])
        self._keys = layer.keys.new_empty(shape)
        self._values = layer.values.new_empty(shape)
        self._keys[..., :filled, :] = layer.keys
        self._values[..., :filled, :] = layer.values
        self.device, self.is_initialized = layer.keys.device, True
        self._fill(filled)

    def _fill(self, length: int) -> None:
        self.keys = self._keys[..., :length, :]
        self.values = self._values[..., :length, :]

    def update(self, key_states, value_states, *args, **kwargs):
        start, new = self.keys.shape[-2], key_states.shape[-2]
        if start + new > self._keys.shape[-2]:
            raise RuntimeError(f"decoding cache full: {start} + {new} > {self._keys.shape[-2]}")
        self._keys[..., start : start + new, :] = key_states
        self._values[..., start : start + new, :] = value_states
        self._fill(start + new)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        length = self.keys.shape[-2]
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._fill(length)


def _reserve(cache, room: int):
    """`cache` with room for `room` more tokens in each of its plain layers (others, e.g.
    sliding-window ones, keep growing transformers' way)."""
    cache.layers = [
        _ReservedLayer(layer, room) if type(layer) is DynamicLayer and layer.is_initialized
        else layer
        for layer in cache.layers
    ]  # fmt: skip
    return cache


def _decode(model, row_cache, base, tok, positions, steps) -> list[list[int]]:
    """Each row's first token `tok` (at `positions`) and `steps` more greedy tokens, the
    rows attending to the cache's columns that `base` (R, cache width) marks; `steps`
    non-increasing."""
    gen = [[int(t)] for t in tok.tolist()]
    active = len(steps)
    if steps:
        row_cache = _reserve(row_cache, steps[0])
    for s in range(steps[0] if steps else 0):
        while steps[active - 1] <= s:  # sorted: finished rows are the tail
            active -= 1
        # Dropping finished rows copies every layer's cache, which on a CPU cost more
        # than decoding the finished rows a while longer: drop them once they are half
        # the batch. Their tokens are computed and ignored.
        if active <= tok.shape[0] // 2:
            row_cache.batch_select_indices(torch.arange(active, device=tok.device))
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
    return gen


def _verify_and_decode(model, cache, chunk, greedy, sequences, drafts):
    """One chunk of rows (b, q) with drafts: one pass over every draft, each row keeps the
    prefix of its draft that the argmax confirms and decodes on from its first
    disagreement; rows whose drafts hold entirely decode nothing."""
    device = model_device(model)
    lengths = [len(sequences[b]) - q for b, q in chunk]  # tokens each continuation has
    guesses = [list(drafts[row])[:n] for row, n in zip(chunk, lengths, strict=True)]
    first = [int(greedy[b, q - 1]) for b, q in chunk]  # the pass's argmax after x[:q]
    seq_index = torch.tensor([b for b, _ in chunk], device=device)
    positions = torch.tensor([q for _, q in chunk], device=device)
    row_cache, base = _row_cache(cache, seq_index, positions)
    # the pass: draft tokens 0..n-2 at positions q.. (the last one predicts nothing needed)
    fed = [g[: n - 1] for g, n in zip(guesses, lengths, strict=True)]
    width = max(len(f) for f in fed)
    argmax = torch.empty((len(chunk), 0), dtype=torch.long)
    valid = base.new_zeros(len(chunk), width)
    if width:
        inputs = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        for r, f in enumerate(fed):
            inputs[r, : len(f)] = torch.tensor(f, dtype=torch.long)
            valid[r, : len(f)] = 1
        offsets = torch.arange(width, device=device)[None]
        out = model(
            input_ids=inputs,
            attention_mask=torch.cat([base, valid], dim=1),
            position_ids=positions[:, None] + offsets,
            cache=row_cache,
            use_cache=True,
        )
        row_cache = out.cache
        argmax = out.logits.argmax(-1).cpu()  # argmax[r, j]: the greedy token after draft[:j+1]
    decoded: dict[tuple[int, int], list[int]] = {}
    pending = []  # (row, accepted tokens k, the corrected token): rows that decode on
    for r, row in enumerate(chunk):
        expected = [first[r], *argmax[r, : len(fed[r])].tolist()]
        guess = guesses[r]
        k = next(
            (j for j in range(lengths[r]) if j >= len(guess) or guess[j] != expected[j]),
            lengths[r],
        )
        if k == lengths[r]:
            decoded[row] = guess
        else:
            pending.append((r, k, expected[k]))
    if not pending:
        return decoded
    # the rows that decode on, longest remaining first; a row sees x[:q] and the k draft
    # tokens it accepted (its rejected ones stay in the cache, masked)
    pending.sort(key=lambda p: -(lengths[p[0]] - p[1] - 1))
    order = torch.tensor([r for r, _, _ in pending], device=device)
    row_cache.batch_select_indices(order)
    accepted = torch.arange(width, device=device)[None] < torch.tensor(
        [[k] for _, k, _ in pending], device=device
    )
    gen = _decode(
        model,
        row_cache,
        torch.cat([base[order], accepted.long()], dim=1),
        torch.tensor([t for _, _, t in pending], device=device),
        positions[order] + torch.tensor([k for _, k, _ in pending], device=device),
        [lengths[r] - k - 1 for r, k, _ in pending],
    )
    for (r, k, _), tail in zip(pending, gen, strict=True):
        decoded[chunk[r]] = guesses[r][:k] + tail
    return decoded
