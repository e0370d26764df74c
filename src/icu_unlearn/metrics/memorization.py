"""Extraction likelihood (EL_n, Eq. 7-8) and memorization accuracy (MA, Eq. 9).

Sequences are token-id lists x_0..x_{T-1}; a prefix of length p is x_0..x_{p-1}, and
its greedy continuation has T - p tokens, so that prefix + continuation is T long.

EL_n averages OVERLAP_n(continuation of x[:p], x[p:]) over prefix lengths
p = 1..T-n (or p = t0..T-n, the window variant the authors' code used). MA is
the share of positions p = 1..T-1 where the greedy next token after x[:p] is x_p.

Two paths compute them:

* the reference does exactly what the definition says: one `generate` call per
  prefix length (batched over sequences, as the published code does);
* the fast path runs one forward pass per sequence and decodes only where it
  must. If the greedy token after x[:p] equals x_p, the continuation of x[:p] is
  x_p followed by the continuation of x[:p+1]; so the continuation of x[:p] is
  x[p:q] + (continuation of x[:q]) with q the first mismatch position >= p, and
  only mismatch positions need decoding. Each decodes from the KV cache of the
  one forward pass (positions >= q masked out, no re-prefill), its first token
  is that pass's argmax, and rows are ordered by remaining length so finished
  rows leave the batch (once they are half of it).

Both treat EOS as an ordinary token (no early stop).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..errors import UsageError
from ..generation import generate_continuations, model_device, next_token_logprobs, right_pad


@dataclass
class MemorizationScores:
    """Per-sequence scores, in input order."""

    extraction_likelihood: list[float | None]  # None where EL was not asked for
    memorization_accuracy: list[float]
    generations: list[list[int]]  # greedy continuation of x[:t0], T - t0 tokens


def ngram_overlap(generated: Sequence[int], reference: Sequence[int], n: int) -> float:
    """OVERLAP_n (Eq. 8): share of the generated n-grams found among the reference's n-grams."""
    grams = [tuple(generated[k : k + n]) for k in range(len(generated) - n + 1)]
    if not grams:
        raise ValueError(f"a continuation of {len(generated)} tokens has no {n}-grams")
    ref = {tuple(reference[k : k + n]) for k in range(len(reference) - n + 1)}
    return sum(g in ref for g in grams) / len(grams)


def prefix_lengths(length: int, prefix_length: int, n: int, window: bool) -> range:
    """The prefix lengths p that EL_n averages over for a sequence of `length` tokens."""
    return range(prefix_length if window else 1, length - n + 1)


def _check(sequences, prefix_lengths_, n, window):
    if n < 1:
        raise UsageError(f"EL n-gram size must be at least 1, got {n}")
    for i, (seq, t0) in enumerate(zip(sequences, prefix_lengths_, strict=True)):
        if not 0 < t0 < len(seq):
            raise UsageError(
                f"sample {i}: prefix length {t0} must be between 1 and its length {len(seq)} "
                "minus 1; give a shorter prefix or a longer sequence"
            )
        if len(prefix_lengths(len(seq), t0, n, window)) == 0:
            raise UsageError(
                f"sample {i}: {len(seq)} tokens leave no continuation of {n} tokens "
                f"to score EL_{n}{' after the prefix' if window else ''}; "
                "use a smaller --el-n or longer sequences"
            )


# ---------------------------------------------------------------- reference


@torch.inference_mode()
def memorization_scores_reference(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    prefix_length: Sequence[int],
    pad_token_id: int,
    n: int = 10,
    window: bool = False,
) -> MemorizationScores:
    """The definitions, literally: one greedy `generate` per prefix length."""
    _check(sequences, prefix_length, n, window)
    seqs = [list(s) for s in sequences]
    el_sum = [0.0] * len(seqs)
    el_count = [0] * len(seqs)
    ma_hits = [0] * len(seqs)
    generations: list[list[int]] = [[] for _ in seqs]
    for p in range(1, max(len(s) for s in seqs)):
        rows = [i for i, s in enumerate(seqs) if p < len(s)]
        lengths = [len(seqs[i]) - p for i in rows]
        conts = generate_continuations(
            model, [seqs[i][:p] for i in rows], lengths, pad_token_id, batch_size=len(rows)
        )
        for i, cont in zip(rows, conts, strict=True):
            truth = seqs[i][p:]
            ma_hits[i] += cont[0] == truth[0]
            if p in prefix_lengths(len(seqs[i]), prefix_length[i], n, window):
                el_sum[i] += ngram_overlap(cont, truth, n)
                el_count[i] += 1
            if p == prefix_length[i]:
                generations[i] = cont
    return MemorizationScores(
        extraction_likelihood=[s / c for s, c in zip(el_sum, el_count, strict=True)],
        memorization_accuracy=[h / (len(s) - 1) for h, s in zip(ma_hits, seqs, strict=True)],
        generations=generations,
    )


# ---------------------------------------------------------------- fast path


@torch.inference_mode()
def memorization_scores(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    prefix_length: Sequence[int],
    pad_token_id: int,
    n: int = 10,
    window: bool = False,
    batch_size: int = 8,
    decode_batch_size: int = 128,
    group_size: int = 64,
    el_for: Sequence[bool] | None = None,
    greedy: torch.Tensor | None = None,
) -> MemorizationScores:
    """EL_n, MA and the greedy suffix generation, equal to the reference, far faster.

    `batch_size` sequences share a scoring forward pass; the mismatch rows of
    `group_size` sequences are pooled and decoded `decode_batch_size` at a time
    (on a CPU, per-token cost falls until about 128 rows a step).
    `el_for[i]` False: sequence i's EL is not computed (None), only its MA and its
    generation from t0 (one decoding row instead of one per mismatch). `greedy`: the
    (N, W) next-token argmax of `teacher_forced`, when the caller has it already.
    """
    _check(sequences, prefix_length, n, window)
    seqs = [list(s) for s in sequences]
    el_for = [True] * len(seqs) if el_for is None else list(el_for)
    if greedy is None:
        greedy = _greedy_next_tokens(model, seqs, pad_token_id, batch_size)
    el: list[float | None] = [None] * len(seqs)
    ma: list[float] = [0.0] * len(seqs)
    gens: list[list[int]] = [[] for _ in seqs]
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))
    for k in range(0, len(order), group_size):
        group = order[k : k + group_size]
        scores = _score_group(
            model,
            [seqs[i] for i in group],
            [prefix_length[i] for i in group],
            [el_for[i] for i in group],
            greedy[group],
            pad_token_id,
            n,
            window,
            decode_batch_size,
        )
        for i, (e, m, g) in zip(group, scores, strict=True):
            el[i], ma[i], gens[i] = e, m, g
    return MemorizationScores(el, ma, gens)


@torch.inference_mode()
def memorization_accuracy(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    pad_token_id: int,
    batch_size: int = 8,
) -> list[float]:
    """MA alone (Eq. 9), from one forward pass: the greedy next token after x[:p] is x_p."""
    seqs = [list(s) for s in sequences]
    return teacher_forced(model, seqs, [1] * len(seqs), pad_token_id, batch_size, nll=False)[1]


def _greedy_next_tokens(model, seqs, pad_token_id, batch_size):
    """(N, W) argmax of the next-token distribution after every position, right-padded."""
    return teacher_forced(model, seqs, [1] * len(seqs), pad_token_id, batch_size, nll=False)[0]


@torch.inference_mode()
def teacher_forced(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    prefix_length: Sequence[int],
    pad_token_id: int,
    batch_size: int = 8,
    nll: bool = True,
) -> tuple[torch.Tensor, list[float], list[float] | None]:
    """One teacher-forced pass: the (N, W) greedy next tokens (right-padded), MA, and
    (`nll`) the suffix's mean negative log-likelihood in nats a token (t >= t0)."""
    device = model_device(model)
    seqs = [list(s) for s in sequences]
    width = max(len(s) for s in seqs)
    greedy = torch.zeros((len(seqs), width), dtype=torch.long)
    suffix_nll: list[float] = []
    for k in range(0, len(seqs), batch_size):
        ids, mask = right_pad(seqs[k : k + batch_size], pad_token_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, W_k, V)
        greedy[k : k + batch_size, : ids.shape[1]] = logits.argmax(-1).cpu()
        if nll:
            picked = next_token_logprobs(logits, ids).cpu()  # (B, W_k - 1)
            for row, seq in enumerate(seqs[k : k + batch_size]):
                t0 = prefix_length[k + row]
                suffix_nll.append(-float(picked[row, t0 - 1 : len(seq) - 1].double().mean()))
        del logits
    ma = [
        (len(seq) - 1 - sum(_mismatches(seq, greedy[b].tolist()))) / (len(seq) - 1)
        for b, seq in enumerate(seqs)
    ]
    return greedy, ma, suffix_nll if nll else None


def _mismatches(seq, greedy_next):
    """mismatch[q]: the greedy token after x[:q] (`greedy_next[q - 1]`) is not x_q; q = 0..T-1."""
    return [False] + [greedy_next[q - 1] != seq[q] for q in range(1, len(seq))]


def _decoding_plan(seq, greedy_next, t0, n, window, el=True):
    """Which mismatch positions of one sequence need decoding.

    `greedy_next[q - 1]` is the greedy token after x[:q]. Returns `nxt` (nxt[p]: the
    first mismatch position >= p, or None), the sorted positions q to decode for
    the prefix lengths EL averages over (with `el`) and for t0, and the number of MA hits.
    """
    length = len(seq)
    mismatch = _mismatches(seq, greedy_next)
    nxt: list[int | None] = [None] * (length + 1)
    for q in range(length - 1, 0, -1):
        nxt[q] = q if mismatch[q] else nxt[q + 1]
    wanted = (set(prefix_lengths(length, t0, n, window)) if el else set()) | {t0}
    positions = sorted({nxt[p] for p in wanted if nxt[p] is not None})
    return nxt, positions, length - 1 - sum(mismatch)


def _score_group(model, seqs, t0s, el_for, greedy, pad_token_id, n, window, decode_batch_size):
    device = model_device(model)
    greedy = greedy[:, : max(len(s) for s in seqs)]
    # One cache for the group; logits_to_keep=1 keeps its pass from holding (N, W, V) logits.
    ids, mask = right_pad(seqs, pad_token_id, device)
    cache = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1).cache

    accuracy = []
    needed: list[tuple[int, int]] = []  # decoding rows (sequence, mismatch position q)
    next_mismatch: list[list[int | None]] = []
    for b, seq in enumerate(seqs):
        nxt, positions, hits = _decoding_plan(seq, greedy[b].tolist(), t0s[b], n, window, el_for[b])
        next_mismatch.append(nxt)
        needed.extend((b, q) for q in positions)
        # hits / positions, as Eq. 9 and the reference count them (bit for bit)
        accuracy.append(hits / (len(seq) - 1))

    decoded = _decode_from_cache(model, cache, seqs, greedy, needed, decode_batch_size)

    scores = []
    for b, seq in enumerate(seqs):
        nxt = next_mismatch[b]

        def continuation(p: int, b: int = b, seq: list[int] = seq, nxt=nxt) -> list[int]:
            q = nxt[p]
            return seq[p:] if q is None else seq[p:q] + decoded[(b, q)]

        el = None
        if el_for[b]:
            ps = prefix_lengths(len(seq), t0s[b], n, window)
            el = sum(ngram_overlap(continuation(p), seq[p:], n) for p in ps) / len(ps)
        scores.append((el, accuracy[b], continuation(t0s[b])))
    return scores


def _decode_from_cache(model, cache, seqs, greedy, rows, decode_batch_size):
    """Greedy continuation of x[:q] for every (sequence b, position q) row, T_b - q tokens.

    Row (b, q) attends to the cached keys of sequence b at positions < q; its new
    tokens take positions q, q+1, ... The first token is the forward pass's argmax.
    """
    device = model_device(model)
    width = cache.get_seq_length()
    remaining = {(b, q): len(seqs[b]) - q - 1 for b, q in rows}
    rows = sorted(rows, key=lambda r: (-remaining[r], r))
    decoded: dict[tuple[int, int], list[int]] = {}
    for k in range(0, len(rows), decode_batch_size):
        chunk = rows[k : k + decode_batch_size]
        steps = [remaining[r] for r in chunk]  # non-increasing
        seq_index = torch.tensor([b for b, _ in chunk], device=device)
        starts = torch.tensor([q for _, q in chunk], device=device)
        tok = torch.tensor([int(greedy[b, q - 1]) for b, q in chunk], device=device)
        gen = [[int(t)] for t in tok.tolist()]
        # A copy of the cache's structure only: selecting rows re-binds each layer's
        # tensors, so the group cache stays intact for the next chunk without a deep copy.
        row_cache = copy.copy(cache)
        row_cache.layers = [copy.copy(layer) for layer in cache.layers]
        row_cache.batch_select_indices(seq_index)
        # Cached positions at or past every row's q are masked for all rows: drop them,
        # so attention and cache growth cost what the rows need, not the longest sequence.
        keep = int(starts.max())
        if keep < width:
            row_cache.crop(keep - width)
        base = (torch.arange(keep, device=device)[None] < starts[:, None]).long()  # (R, keep)
        active = len(chunk)
        for s in range(steps[0]):
            while steps[active - 1] <= s:  # sorted: finished rows are the tail
                active -= 1
            # Dropping finished rows copies every layer's cache, which on a CPU cost more
            # than decoding the finished rows a while longer: drop them once they are half
            # the batch. Their tokens are computed and ignored.
            if active <= tok.shape[0] // 2:
                row_cache.batch_select_indices(torch.arange(active, device=device))
                base, tok, starts = base[:active], tok[:active], starts[:active]
            attention = torch.cat([base, base.new_ones(base.shape[0], s + 1)], dim=1)
            out = model(
                input_ids=tok[:, None],
                attention_mask=attention,
                position_ids=(starts + s)[:, None],
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
