"""Contrastive Learning Enhancement's data (paper §3.4): the analogous pool and k-NN pairing.

Pool and forget samples are embedded with a sentence encoder (all-MiniLM-L6-v2 by
default); each forget sample is paired with its nearest pool neighbours by cosine
similarity (faiss inner product on unit vectors). Forget members are never
chosen, and neither is a near-copy of any forget sample (similarity above
`max_similarity`), for any forget sample: on lm-extraction, licence and code
boilerplate has neighbours that are almost the same text, and learning a
near-copy of A undoes A's forgetting whichever sample it was paired with.
Ties are broken by pool index, so pairing is deterministic.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from tqdm.auto import tqdm

from .io import atomic_write_bytes
from .paths import cache_dir


@dataclass(frozen=True)
class Pair:
    forget_id: str
    pool_index: int
    similarity: float


@dataclass
class Pairing:
    pairs: dict[str, list[Pair]]  # forget id -> its k learn samples, nearest first
    excluded: int  # pool rows the caller ruled out (members, rows sharing a record's tokens)
    excluded_near_copies: int  # other pool rows above the ceiling for some forget sample
    near_copies: dict[int, str] = field(default_factory=dict)  # such a row -> the id it copies

    def to_rows(self) -> list[dict]:
        return [
            {"forget_id": p.forget_id, "pool_index": p.pool_index, "similarity": p.similarity}
            for pairs in self.pairs.values()
            for p in pairs
        ]


@cache
def _encoder(name: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name, device="cpu")


def default_encoder() -> str:
    from .metrics.similarity import default_bertscore_model

    return default_bertscore_model()


def embed(texts: Sequence[str], encoder: str | None = None, batch_size: int = 64, progress=False):
    """(N, D) float32 unit vectors, cached on disk by encoder + content."""
    encoder = encoder or default_encoder()
    key = hashlib.sha256(json.dumps([encoder, list(texts)]).encode()).hexdigest()
    path = cache_dir() / "embeddings" / f"{key}.npy"
    if path.exists():
        return np.load(path)
    model = _encoder(encoder)
    # one batch an encode call, longest texts first as the library batches them, so that
    # the progress bar is ours and says what it counts (the library's says "Batches")
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    vectors = np.zeros((len(texts), model.get_embedding_dimension()), np.float32)
    starts = range(0, len(order), batch_size)
    for start in tqdm(
        starts, desc="embedding texts for pairing", unit="batch", disable=not progress
    ):
        rows = order[start : start + batch_size]
        vectors[rows] = model.encode(
            [texts[i] for i in rows],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write_bytes(path, buffer.getvalue())
    return vectors


def pair(
    forget_ids: Sequence[str],
    forget_vectors: np.ndarray,
    pool_vectors: np.ndarray,
    excluded_mask: np.ndarray,
    k: int = 1,
    max_similarity: float = 0.9,
) -> Pairing:
    """k nearest allowed pool rows for each forget vector (cosine, ties by pool index).

    Allowed: not in `excluded_mask` (the caller's: a member of the forget set, or a row that
    holds a run of its tokens), and not a near-copy of any forget sample.
    """
    import faiss

    index = faiss.IndexFlatIP(pool_vectors.shape[1])
    index.add(pool_vectors)
    near_copies = {
        j: forget_ids[i]
        for j, i in _near_copies(index, forget_vectors, max_similarity).items()
        if not excluded_mask[j]
    }
    allowed = ~excluded_mask
    allowed[list(near_copies)] = False
    excluded = len(pool_vectors) - int(allowed.sum())
    pairs: dict[str, list[Pair]] = {}
    search = min(len(pool_vectors), max(4 * k + excluded, 16))
    for i, forget_id in enumerate(forget_ids):
        while True:
            sims, idx = index.search(forget_vectors[i : i + 1], search)
            candidates = sorted(
                (
                    (_rounded(s), int(j))
                    for s, j in zip(sims[0], idx[0], strict=True)
                    if j >= 0 and allowed[j]
                ),
                key=lambda c: (-c[0], c[1]),
            )
            chosen = [Pair(forget_id, j, s) for s, j in candidates[:k]]
            if len(chosen) == k or search >= len(pool_vectors):
                break
            search = min(len(pool_vectors), search * 4)
        if len(chosen) < k:
            from .errors import UsageError

            raise UsageError(
                f"forget sample {forget_id!r} has only {len(chosen)} allowed pool neighbours "
                f"of the {k} asked; give a larger analogous.pool, raise "
                "analogous.max_similarity or lower analogous.shared_tokens"
            )
        pairs[forget_id] = chosen
    return Pairing(pairs, int(excluded_mask.sum()), len(near_copies), near_copies)


def _rounded(similarity) -> float:
    # float noise becomes a tie (ties go to the lower pool index), and the ceiling
    # is compared on the same rounded value that the pairs record
    return round(float(similarity), 5)


def _near_copies(index, forget_vectors: np.ndarray, max_similarity: float) -> dict[int, int]:
    """Pool row -> the forget row it is most similar to, for every row above the ceiling."""
    # faiss keeps similarities strictly above the radius; the margin lets the rounded
    # comparison decide at the boundary
    limits, sims, rows = index.range_search(forget_vectors, max_similarity - 1e-4)
    best: dict[int, tuple[float, int]] = {}
    for i in range(len(forget_vectors)):
        span = slice(limits[i], limits[i + 1])
        for s, j in zip(sims[span], rows[span], strict=True):
            s, j = _rounded(s), int(j)
            if s > max_similarity and (j not in best or s > best[j][0]):
                best[j] = (s, i)
    return {j: i for j, (_, i) in sorted(best.items())}
