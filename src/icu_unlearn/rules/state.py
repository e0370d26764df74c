"""One forget sequence's state at one epoch: what scoring measured, what the rule decided.

Scoring fills a `SequenceState` from the epoch's row (`from_row`); the stopping rule
reads states and returns `Decision`s (`StoppingRule.decide`), which the loop applies in
one place (`decided`). The row written to samples.jsonl gains the decision's fields
(`Decision.fields`), as it always has: `done` and `at_reference_nll`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """A rule's verdict on one sequence this epoch."""

    # why the sequence counts as forgotten: "criteria" (its own EL and MA under the
    # thresholds) or "reference" (no more extractable than under the reference model);
    # None: not done
    done: str | None = None
    # paused: its suffix is already as unlikely as under the reference model, so more
    # ascent would make it stand out; it leaves training while it stays so
    at_reference_nll: bool = False
    # forgotten too well (`base.stands_out`): never done while so; None: no baseline
    stands_out: bool | None = None

    def fields(self) -> dict:
        return {
            "done": self.done,
            "at_reference_nll": self.at_reference_nll,
            "stands_out": self.stands_out,
        }


@dataclass(frozen=True)
class SequenceState:
    """A forget sequence's scores this epoch and the rule's decision on them."""

    id: str
    ma: float  # measured every epoch (one teacher-forced pass)
    el: float | None = None  # EL_n; None: not measured this epoch (the lazy schedule)
    suffix_nll: float | None = None  # nats a token; None: not measured (planting)
    decision: Decision | None = None  # None: not decided yet (or a rule that decides none)

    @classmethod
    def from_row(cls, row: dict, el_key: str) -> SequenceState:
        """The state of a scored row (`evaluate.score_samples`); EL absent = not measured."""
        return cls(row["id"], row["ma"], row.get(el_key), row.get("suffix_nll"))

    @property
    def el_measured(self) -> bool:
        return self.el is not None

    @property
    def done(self) -> str | None:
        return None if self.decision is None else self.decision.done

    @property
    def paused(self) -> bool:
        return self.decision is not None and self.decision.at_reference_nll

    def decided(self, decision: Decision) -> SequenceState:
        return dataclasses.replace(self, decision=decision)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
