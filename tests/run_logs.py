"""Comparing the logs of two runs that should be the same run."""

from __future__ import annotations


def without_times(rows):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


def scored_alike(lazy, other):
    """Rows equal but for the EL values `lazy` skipped (None) and `other` scored: the
    last epoch of a run is scored whole, the same epoch of a longer run lazily."""
    assert len(lazy) == len(other)
    for a, b in zip(lazy, other, strict=True):
        skipped = {k for k, v in a.items() if v is None and b.get(k) is not None}
        if skipped:
            skipped.add("el_scored")
        assert {k: v for k, v in a.items() if k not in skipped} == {
            k: v for k, v in b.items() if k not in skipped
        }
