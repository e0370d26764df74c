"""Contrastive Learning Enhancement's data (paper §3.4): the analogous pool and k-NN pairing.

Pool and forget samples are embedded with a sentence encoder (all-MiniLM-L6-v2 by
default); each forget sample is paired with its nearest pool neighbours by cosine
similarity (faiss inner product on unit vectors). Forget members are never
chosen, and neither are near-copies of a forget sample (similarity above
`max_similarity`): on lm-extraction, licence and code boilerplate has neighbours
that are almost the same text, and learning them undoes the forgetting.
Ties are broken by pool index, so pairing is deterministic.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

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
    excluded_members: int  # pool rows identical to a forget sample
    excluded_near_copies: int  # neighbours above the similarity ceiling

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
    vectors = _encoder(encoder).encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    )
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write_bytes(path, buffer.getvalue())
    return vectors


def pair(
    forget_ids: Sequence[str],
    forget_vectors: np.ndarray,
    pool_vectors: np.ndarray,
    member_mask: np.ndarray,
    k: int = 1,
    max_similarity: float = 0.9,
) -> Pairing:
    """k nearest allowed pool rows for each forget vector (cosine, ties by pool index)."""
    import faiss

    index = faiss.IndexFlatIP(pool_vectors.shape[1])
    index.add(pool_vectors)
    allowed = ~member_mask
    excluded_members = int(member_mask.sum())
    near_copies = 0
    pairs: dict[str, list[Pair]] = {}
    search = min(len(pool_vectors), max(4 * k + excluded_members, 16))
    for i, forget_id in enumerate(forget_ids):
        while True:
            sims, idx = index.search(forget_vectors[i : i + 1], search)
            # rounding makes float noise a tie, and ties go to the lower pool index
            candidates = sorted(
                (
                    (round(float(s), 5), int(j))
                    for s, j in zip(sims[0], idx[0], strict=True)
                    if j >= 0
                ),
                key=lambda c: (-c[0], c[1]),
            )
            chosen, skipped = [], 0
            for s, j in candidates:
                if not allowed[j]:
                    continue
                if s > max_similarity:
                    skipped += 1
                    continue
                chosen.append(Pair(forget_id, j, s))
                if len(chosen) == k:
                    break
            if len(chosen) == k or search >= len(pool_vectors):
                break
            search = min(len(pool_vectors), search * 4)
        if len(chosen) < k:
            from .errors import UsageError

            raise UsageError(
                f"forget sample {forget_id!r} has only {len(chosen)} allowed pool neighbours "
                f"of the {k} asked; give a larger analogous.pool or raise analogous.max_similarity"
            )
        near_copies += skipped
        pairs[forget_id] = chosen
    return Pairing(pairs, excluded_members, near_copies)
