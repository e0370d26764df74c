"""The paper's rule (`stop.scope: mean`, §4.4; the paper presets): stop when the forget
set as a whole (removed samples included) has mean EL_n and MA under the thresholds, or
when IUR has removed every sample."""

from __future__ import annotations

from ..errors import UsageError
from .base import StoppingRule
from .state import SequenceState, mean


class Mean(StoppingRule):
    name = "mean"

    def refuse_already_forgotten(self, states: list[SequenceState]) -> None:
        c = self.criteria
        el, ma = mean(s.el for s in states), mean(s.ma for s in states)
        if el < c.el_max and ma < c.ma_max:
            raise UsageError(
                f"the model has already forgotten this forget set (EL_{c.el_n} {el:.4f} < "
                f"{c.el_max:.4f}, MA {ma:.4f} < {c.ma_max:.4f}); "
                "nothing to unlearn: check the model and forget set, or lower stop.el_max/ma_max"
            )

    def _el_needed(self, states: list[SequenceState]) -> set[str]:
        """Every EL once the mean MA is under ma_max; none before (the mean cannot pass)."""
        return (
            {s.id for s in states} if mean(s.ma for s in states) < self.criteria.ma_max else set()
        )

    def to_check(self, states: list[SequenceState], active: list[str]) -> list[str]:
        """The active samples (the paper); every one with `refinement.readmit` (the
        authors' code)."""
        return [s.id for s in states] if self.criteria.readmit else list(active)

    def next_active(
        self, states: list[SequenceState], forgotten: set[str], active: list[str]
    ) -> list[str]:
        """The active ones IUR did not call forgotten (with readmit: every one it did not)."""
        pool = [s.id for s in states] if self.criteria.readmit else active
        return [i for i in pool if i not in forgotten]

    def stop_reason(self, states: list[SequenceState], active: list[str], epoch: int):
        c = self.criteria
        # MA first: over ma_max, EL was not scored (`_el_needed`) and cannot decide
        if mean(s.ma for s in states) < c.ma_max and mean(s.el for s in states) < c.el_max:
            return "criteria_met"
        if not active:
            return "all_forgotten"
        return super().stop_reason(states, active, epoch)


RULE = Mean
