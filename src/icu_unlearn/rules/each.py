"""The product's rule (`stop.scope: each`): a deletion request names records, so every
forget sequence must be forgotten on its own — its EL and MA under the thresholds, or
no more extractable than under the reference model (`stop.reference`)."""

from __future__ import annotations

from ..errors import UsageError
from .base import StoppingRule
from .state import SequenceState


class Each(StoppingRule):
    name = "each"

    @classmethod
    def check_config(cls, config) -> None:
        if config.refinement.readmit:
            raise UsageError(
                "refinement.readmit does nothing under stop.scope: each (every sequence not "
                "done is checked and trains anyway); drop it, or set stop.scope: mean"
            )

    def initial_active(self, states: list[SequenceState]) -> list[str]:
        if self.criteria.targeted:
            return [s.id for s in states]
        return [s.id for s in states if s.done is None]

    def refuse_already_forgotten(self, states: list[SequenceState]) -> None:
        c = self.criteria
        if all(s.done for s in states):
            raise UsageError(
                f"the model has already forgotten every sequence of this forget set on its own "
                f"(EL_{c.el_n} < {c.el_max:.4f} and MA < {c.ma_max:.4f}, or no more than under "
                "stop.reference); nothing to unlearn: check the model and forget set"
            )

    def _el_needed(self, states: list[SequenceState]) -> set[str]:
        """EL matters only next to an MA that passes: MA < ma_max for the own rule, MA
        within the reference's + margin for the reference rule."""
        return {s.id for s in states if self.criteria.reachable(s)}

    def to_check(self, states: list[SequenceState], active: list[str]) -> list[str]:
        """IUR checks every sequence not done."""
        return [s.id for s in states if s.done is None]

    def next_active(
        self, states: list[SequenceState], forgotten: set[str], active: list[str]
    ) -> list[str]:
        """Every sequence not done, less those IUR calls forgotten and those already at
        the reference's likelihood; when that leaves nothing while some sequence is not
        done, every sequence not done trains (IUR's similarity is a pause, never the
        reason a record stays extractable) but those that stand out: ascent on a record
        already far less likely than never-seen text only makes it stand out more
        (measured on the demo's subjects: 118 nats a token). With none left to train, the
        run ends (`stop_reason`).

        With a targeted forget term every sequence trains every epoch, done ones too: at
        its target a sequence's term is near zero and holds it there while the others
        move the shared weights, and the last hard record does not train alone at the
        full rate (measured on the tiny scenario: with ascent and pauses the 8 kept
        sequences fell to MA 0.24)."""
        if self.criteria.targeted:
            return [s.id for s in states]
        undone = [s for s in states if s.done is None]
        paused = forgotten | {s.id for s in states if s.paused}
        return [s.id for s in undone if s.id not in paused] or [
            s.id for s in undone if not s.decision.stands_out
        ]

    def stop_reason(self, states: list[SequenceState], active: list[str], epoch: int):
        if all(s.done for s in states):
            return "criteria_met"
        if not active:  # every record left stands out: ascent can only push it further
            return "incomplete"
        return super().stop_reason(states, active, epoch)


RULE = Each
