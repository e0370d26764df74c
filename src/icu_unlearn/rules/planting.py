"""Planting's rule (`icu-unlearn memorize`): train every sequence until each one's MA
reaches `memorize.target_ma`. It decides on MA alone: no EL, no suffix NLL, no audit."""

from __future__ import annotations

from .base import Criteria, StoppingRule
from .state import SequenceState


class Planting(StoppingRule):
    name = "planting"
    scores_el = False
    audits = False

    def __init__(self, criteria: Criteria, target_ma: float):
        super().__init__(criteria)
        self.target_ma = target_ma

    def decide(self, states: list[SequenceState]) -> list[SequenceState]:
        return states

    def not_done(self, states: list[SequenceState]) -> list[dict]:
        return []

    def stop_reason(self, states: list[SequenceState], active: list[str], epoch: int):
        if min(s.ma for s in states) >= self.target_ma:
            return "criteria_met"
        return super().stop_reason(states, active, epoch)
