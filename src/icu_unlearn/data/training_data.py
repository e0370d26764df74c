"""What a method trains on besides the forget set, per forget sample: one builder per kind.

A method names the kinds it needs (`Method.needs`); each kind's builder makes, for
every forget sample, the samples that travel with it through training. Adding a kind
is one builder and one line in `BUILDERS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from ..config import RunConfig
from ..errors import UsageError
from ..methods.base import MISMATCH, PAIRS, REFUSAL
from ..pairing import embed, pair
from .forget import ForgetSample
from .pool import load_pool


@dataclass(frozen=True)
class Draw:
    """Samples drawn anew at every step: `k` of `candidates` per forget sample, each made
    into a training sample by `make(forget_sample, candidate)`. A draw is fixed by its key
    (seed, epoch, step, sample), so it is the same on every process and after --resume."""

    candidates: list
    k: int
    make: Callable[[ForgetSample, object], ForgetSample]

    def draw(self, sample: ForgetSample, key: str) -> list[ForgetSample]:
        picks = (seeded_index(_nth(key, j), len(self.candidates)) for j in range(self.k))
        return [self.make(sample, self.candidates[i]) for i in picks]


def _nth(key: str, j: int) -> str:
    return key if j == 0 else f"{key}:{j}"


@dataclass(frozen=True)
class TrainingData:
    by_kind: dict[str, dict[str, list[ForgetSample]]]  # kind -> forget id -> its samples
    pair_stats: dict | None  # the pairing's statistics, for the manifest
    pair_rows: list[dict] | None  # pairs.jsonl: each forget sample's learn samples
    drawn: dict[str, Draw] = field(default_factory=dict)  # kinds drawn anew every step

    def for_step(self, forget: dict, ids: list[str], seed: int, epoch: int, step: int):
        """kind -> the samples that train with the forget samples `ids` at this step."""
        batches = {kind: [s for i in ids for s in by_id[i]] for kind, by_id in self.by_kind.items()}
        for kind, draw in self.drawn.items():
            batches[kind] = [
                s for i in ids for s in draw.draw(forget[i], f"{seed}:{epoch}:{step}:{i}")
            ]
        return batches


@dataclass(frozen=True)
class _Pool:
    """The analogous pool with what the builders ask of it."""

    pool: object
    member_mask: list[bool]  # pool rows that are forget samples: never used
    sample: Callable[[int], ForgetSample]  # a pool row as a learn sample
    # pool rows, not members, that share a run of analogous.shared_tokens tokens with a
    # forget sample: never used either
    shares_mask: list[bool]

    @property
    def unusable(self) -> list[bool]:
        return [a or b for a, b in zip(self.member_mask, self.shares_mask, strict=True)]


@dataclass(frozen=True)
class _Built:
    by_id: dict[str, list[ForgetSample]] | None = None
    stats: dict | None = None
    rows: list[dict] | None = None
    drawn: Draw | None = None  # instead of by_id: drawn at every step


def build(config: RunConfig, needs: set, forget: list[ForgetSample], tokenizer, progress: bool):
    """The data of every kind in `needs`; the pool is loaded once, when a kind needs it."""

    @cache
    def pool() -> _Pool:
        return _load_pool(config, forget, tokenizer)

    by_kind, drawn, stats, rows = {}, {}, None, None
    for kind in sorted(needs, key=list(BUILDERS).index):
        built = BUILDERS[kind](config, forget, tokenizer, pool, progress)
        if built.drawn is not None:
            drawn[kind] = built.drawn
        else:
            by_kind[kind] = built.by_id
        stats = stats if built.stats is None else built.stats
        rows = rows if built.rows is None else built.rows
    return TrainingData(by_kind, stats, rows, drawn)


def _load_pool(config: RunConfig, forget, tokenizer) -> _Pool:
    a = config.analogous
    pool = load_pool(a.pool, forget, tokenizer, a.pool_limit, config.data_dir)
    members = {" ".join((s.prefix + s.suffix).split()) for s in forget}

    def sample(index: int) -> ForgetSample:
        return pool.learn_sample(
            index, tokenizer, config.prefix_length, a.max_tokens, config.data_dir
        )

    member_mask = [" ".join(t.split()) in members for t in pool.texts]
    shares = _shares_tokens(pool.texts, forget, tokenizer, a.shared_tokens)
    shares_mask = [s and not m for s, m in zip(shares, member_mask, strict=True)]
    return _Pool(pool, member_mask, sample, shares_mask)


def _shares_tokens(texts, forget, tokenizer, n: int) -> list[bool]:
    """Per pool text: does its tokenization hold a run of `n` tokens that some forget
    sample (prefix and suffix) holds? The whole text, not only the tokens a learn sample
    keeps (`analogous.max_tokens`): a text is refused for a run past them too. All False
    with `n` 0."""
    if n == 0 or not texts:
        return [False] * len(texts)
    runs = {
        ids[i : i + n]
        for s in forget
        for ids in [tuple(s.input_ids)]
        for i in range(len(ids) - n + 1)
    }
    encoded = tokenizer(list(texts), add_special_tokens=False).input_ids
    return [any(tuple(ids[i : i + n]) in runs for i in range(len(ids) - n + 1)) for ids in encoded]


def _pairs(config: RunConfig, forget, tokenizer, pool, progress: bool) -> _Built:
    """Each forget sample's k analogous pool rows (paper Eq. 2), with what pairs.jsonl holds."""
    import numpy as np

    a, p = config.analogous, pool()
    pairing = pair(
        [s.id for s in forget],
        embed([s.prefix + s.suffix for s in forget], a.encoder),
        embed(p.pool.texts, a.encoder, progress=progress),
        np.array(p.unusable),
        a.k,
        a.max_similarity,
    )
    stats = {
        "pairs": len(pairing.to_rows()),
        "excluded_members": sum(p.member_mask),
        "excluded_shared_tokens": sum(p.shares_mask),
        "excluded_near_copies": pairing.excluded_near_copies,
        "pool": p.pool.spec,
        "pool_size": len(p.pool.texts),
    }
    rows = [r | {"learn_text": p.pool.texts[r["pool_index"]]} for r in pairing.to_rows()]
    by_id = {fid: [p.sample(x.pool_index) for x in ps] for fid, ps in pairing.pairs.items()}
    return _Built(by_id, stats, rows)


def _mismatches(config: RunConfig, forget, tokenizer, pool, progress: bool) -> _Built:
    """Each forget prefix continued by other pool texts' suffixes (LLMU's random data):
    K per sample, drawn anew every step as LLMU does (`llmu.redraw`), or fixed."""
    p = pool()
    candidates = [i for i, unusable in enumerate(p.unusable) if not unusable]
    if not candidates:
        raise UsageError("the analogous pool has no texts outside the forget set")

    def make(s: ForgetSample, index: int) -> ForgetSample:
        other = p.sample(index)
        return ForgetSample(f"mismatch:{s.id}", s.prefix_ids, other.suffix_ids, s.prefix, "")

    draw = Draw(candidates, config.llmu.num_mismatches, make)
    if config.llmu.redraw:
        return _Built(drawn=draw)
    # one seeded draw per sample: the same whatever the sample order
    return _Built({s.id: draw.draw(s, f"{config.seed}:{s.id}") for s in forget})


def _refusals(config: RunConfig, forget, tokenizer, pool, progress: bool) -> _Built:
    """Each forget prefix continued by a refusal such as "I don't know." (DPO's chosen
    side), drawn from `dpo.refusals` anew every step as TOFU does, or one per sample."""
    texts = [" " + r.strip() for r in config.dpo.refusals]
    encoded = [tuple(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]

    def make(s: ForgetSample, index: int) -> ForgetSample:
        return ForgetSample(f"refusal:{s.id}", s.prefix_ids, encoded[index], s.prefix, texts[index])

    draw = Draw(list(range(len(texts))), 1, make)
    if config.dpo.redraw:
        return _Built(drawn=draw)
    return _Built({s.id: draw.draw(s, f"{config.seed}:{s.id}") for s in forget})


def seeded_index(key: str, n: int) -> int:
    """A draw in [0, n) fixed by `key`: the same on every process, run and resume."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


# kind -> builder(config, forget, tokenizer, pool, progress); built in this order
BUILDERS = {PAIRS: _pairs, MISMATCH: _mismatches, REFUSAL: _refusals}
