"""Extraction likelihood (EL_n, Eq. 7-8) and memorization accuracy (MA, Eq. 9).

Sequences are token-id lists x_0..x_{T-1}; a prefix of length p is x_0..x_{p-1}, and
its greedy continuation has T - p tokens, so that prefix + continuation is T long.

EL_n averages OVERLAP_n(continuation of x[:p], x[p:]) over prefix lengths
p = 1..T-n (or p = t0..T-n, the window variant the authors' code used). MA is
the share of positions p = 1..T-1 where the greedy next token after x[:p] is x_p.

Two paths compute them:

* the literal path does exactly what the definition says: one `generate` call per
  prefix length (batched over sequences, as the published code does);
* the fast path runs one forward pass per sequence and decodes only where it
  must. If the greedy token after x[:p] equals x_p, the continuation of x[:p] is
  x_p followed by the continuation of x[:p+1]; so the continuation of x[:p] is
  x[p:q] + (continuation of x[:q]) with q the first mismatch position >= p, and
  only mismatch positions need decoding, each from the KV cache of one forward
  pass over its batch (`scoring.greedy_continuations`).

Both treat EOS as an ordinary token (no early stop). Every EL in an output says its
range (`el_range`): "p>=t0" for the window, "all" for every prefix length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..errors import UsageError
from ..generation import generate_continuations
from ..precision import inference
from ..scoring import TeacherForced, accuracy, greedy_continuations, next_token_hits, teacher_forced


@dataclass
class MemorizationScores:
    """Per-sequence scores, in input order."""

    extraction_likelihood: list[float | None]  # None where EL was not asked for
    memorization_accuracy: list[float]
    generations: list[list[int]]  # greedy continuation of x[:t0], T - t0 tokens


def ngram_overlap(generated: Sequence[int], true: Sequence[int], n: int) -> float:
    """OVERLAP_n (Eq. 8): share of the generated n-grams found among the true text's n-grams."""
    grams = [tuple(generated[k : k + n]) for k in range(len(generated) - n + 1)]
    if not grams:
        raise ValueError(f"a continuation of {len(generated)} tokens has no {n}-grams")
    ref = {tuple(true[k : k + n]) for k in range(len(true) - n + 1)}
    return sum(g in ref for g in grams) / len(grams)


def prefix_lengths(length: int, prefix_length: int, n: int, window: bool) -> range:
    """The prefix lengths p that EL_n averages over for a sequence of `length` tokens."""
    return range(prefix_length if window else 1, length - n + 1)


def el_range(window: bool) -> str:
    """The label of the prefix lengths EL averages over, written beside every EL output."""
    return "p>=t0" if window else "all"


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


# ---------------------------------------------------------------- literal path


@torch.inference_mode()
def memorization_scores_literal(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    prefix_length: Sequence[int],
    pad_token_id: int,
    n: int = 10,
    window: bool = False,
    precision: str = "fp32",
) -> MemorizationScores:
    """The definitions, literally: one greedy `generate` per prefix length (on bfloat16
    weights with `precision` "bf16", as the fast path)."""
    _check(sequences, prefix_length, n, window)
    seqs = [list(s) for s in sequences]
    el_sum = [0.0] * len(seqs)
    el_count = [0] * len(seqs)
    ma_hits = [0] * len(seqs)
    generations: list[list[int]] = [[] for _ in seqs]
    for p in range(1, max(len(s) for s in seqs)):
        rows = [i for i, s in enumerate(seqs) if p < len(s)]
        lengths = [len(seqs[i]) - p for i in rows]
        with inference(precision, model):
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


def memorization_pass(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    prefix_length: Sequence[int] | None,
    pad_token_id: int,
    batch_size: int = 8,
    suffix_nll: bool = False,
    precision: str = "fp32",
) -> TeacherForced:
    """The teacher-forced pass that EL/MA scoring starts from: MA, the greedy next tokens
    EL's decoding plan needs and (`suffix_nll`) each suffix's mean NLL.

    Batches of consecutive sequences, not longest first: every run was scored so, and a
    sequence's logits change in their last bits with its batch's other sequences, so that
    the run, `eval` and `audit` give the same numbers only when they batch alike.
    """
    return teacher_forced(
        model,
        sequences,
        pad_token_id,
        prefix_length,
        batch_size,
        suffix_nll=suffix_nll,
        longest_first=False,
        precision=precision,
    )


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
    el_for: Sequence[bool] | None = None,
    greedy: torch.Tensor | None = None,
    precision: str = "fp32",
    drafts: Sequence[dict[int, list[int]]] | None = None,
) -> MemorizationScores:
    """EL_n, MA and the greedy suffix generation, equal to the literal path, far faster.

    The batches of `memorization_pass` (`batch_size` consecutive sequences) each take one
    cache pass, longest sequence first, and decode their mismatch rows `decode_batch_size`
    at a time (on a CPU, per-token cost falls until about 128 rows a step).
    `el_for[i]` False: sequence i's EL is not computed (None), only its MA and its
    generation from t0 (one decoding row instead of one per mismatch). `greedy`: the
    (N, W) next-token argmax of `memorization_pass`, when the caller has it already.
    `precision` "bf16": every pass on bfloat16 weights (`precision.inference`).
    `drafts[i]`: sequence i's continuations from an earlier scoring ({q: continuation of
    x[:q]}), verified instead of decoded where they still hold
    (`scoring.greedy_continuations`) and updated in place with this scoring's; the
    scores are the same with or without them.
    """
    _check(sequences, prefix_length, n, window)
    seqs = [list(s) for s in sequences]
    el_for = [True] * len(seqs) if el_for is None else list(el_for)
    if greedy is None:
        greedy = memorization_pass(
            model, seqs, prefix_length, pad_token_id, batch_size, precision=precision
        ).greedy
    hits = [next_token_hits(s, greedy[i, : len(s) - 1].tolist()) for i, s in enumerate(seqs)]
    el: list[float | None] = [None] * len(seqs)
    gens: list[list[int]] = [[] for _ in seqs]
    for k in range(0, len(seqs), batch_size):
        # longest first within the batch: the order its decoding rows were always taken in
        group = sorted(range(k, min(k + batch_size, len(seqs))), key=lambda i: (-len(seqs[i]), i))
        scores = _score_group(
            model,
            [seqs[i] for i in group],
            [prefix_length[i] for i in group],
            [el_for[i] for i in group],
            [hits[i] for i in group],
            greedy[group],
            pad_token_id,
            n,
            window,
            decode_batch_size,
            precision,
            None if drafts is None else [drafts[i] for i in group],
        )
        for i, (e, g) in zip(group, scores, strict=True):
            el[i], gens[i] = e, g
    return MemorizationScores(el, [accuracy(h) for h in hits], gens)


def memorization_accuracy(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    pad_token_id: int,
    batch_size: int = 8,
    precision: str = "fp32",
) -> list[float]:
    """MA alone (Eq. 9), from one forward pass: the greedy next token after x[:p] is x_p."""
    return memorization_pass(
        model, sequences, None, pad_token_id, batch_size, precision=precision
    ).ma


def _decoding_plan(seq, hits, t0, n, window, el=True):
    """Which mismatch positions of one sequence need decoding.

    `hits[q - 1]`: the greedy token after x[:q] is x_q. Returns `nxt` (nxt[p]: the first
    mismatch position >= p, or None) and the sorted positions q to decode for the prefix
    lengths EL averages over (with `el`) and for t0.
    """
    length = len(seq)
    nxt: list[int | None] = [None] * (length + 1)
    for q in range(length - 1, 0, -1):
        nxt[q] = nxt[q + 1] if hits[q - 1] else q
    wanted = (set(prefix_lengths(length, t0, n, window)) if el else set()) | {t0}
    return nxt, sorted({nxt[p] for p in wanted if nxt[p] is not None})


def _score_group(
    model,
    seqs,
    t0s,
    el_for,
    hits,
    greedy,
    pad_token_id,
    n,
    window,
    decode_batch_size,
    precision,
    drafts,
):
    """(EL or None, generation from t0) of each sequence of one batch; `drafts` (one
    {q: continuation} per sequence, or None) verified and then updated."""
    greedy = greedy[:, : max(len(s) for s in seqs)]
    needed: list[tuple[int, int]] = []  # decoding rows (sequence, mismatch position q)
    next_mismatch: list[list[int | None]] = []
    for b, seq in enumerate(seqs):
        nxt, positions = _decoding_plan(seq, hits[b], t0s[b], n, window, el_for[b])
        next_mismatch.append(nxt)
        needed.extend((b, q) for q in positions)

    guesses = None
    if drafts is not None:
        guesses = {(b, q): _draft(drafts[b], seqs[b], q) for b, q in needed}
        guesses = {row: g for row, g in guesses.items() if g is not None}
    decoded = greedy_continuations(
        model, seqs, greedy, needed, pad_token_id, decode_batch_size, precision, guesses
    )
    if drafts is not None:
        for (b, q), continuation in decoded.items():
            drafts[b][q] = continuation

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
        scores.append((el, continuation(t0s[b])))
    return scores


def _draft(known: dict[int, list[int]], seq: list[int], q: int) -> list[int] | None:
    """A guess of x[:q]'s continuation from earlier ones: x[:q]'s own, else that of the
    nearest shorter prefix x[:p] whose continuation wrote x[p:q] (so went on from x[:q])."""
    if q in known:
        return known[q]
    for p in sorted((p for p in known if p < q), reverse=True):
        if known[p][: q - p] == seq[p:q]:
            return known[p][q - p :]
    return None
