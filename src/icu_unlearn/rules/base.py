"""What a stopping rule answers, and the per-sequence criteria the rules share.

A rule is chosen once from the config (`rules.rule_for`) and is asked, after every
epoch, the same questions:

* `decide(states)`: each sequence's decision (done, and why; paused);
* `el_needed(states, everything)`: which sequences' EL can change a decision this
  epoch, given every sequence's MA (EL is the dearest score);
* `next_active(states, forgotten, active)`: which sequences train next epoch, given
  those IUR calls forgotten now (`to_check(states, active)`: which IUR looks at);
* `stop_reason(states, active, epoch)`: why the run ends now, or None to go on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .state import Decision, SequenceState


@dataclass(frozen=True)
class Criteria:
    """Everything a rule decides with, fixed when the run begins."""

    el_n: int
    el_max: float
    ma_max: float
    max_epochs: int
    # the reference model's EL, MA and suffix NLL per sequence id (None without one)
    reference: dict | None = None
    reference_margin: float = 0.0
    reference_nll_margin: float = 0.0
    el_every_epoch: bool = False
    readmit: bool = False

    @property
    def el_key(self) -> str:
        return f"el_{self.el_n}"

    def own(self, s: SequenceState) -> bool:
        """Its own EL and MA under the thresholds (EL not measured: cannot hold)."""
        return s.el_measured and s.el < self.el_max and s.ma < self.ma_max

    def as_reference(self, s: SequenceState) -> bool:
        """No more extractable than under the reference model: EL and MA within the margin."""
        ref = self.reference[s.id] if self.reference else None
        return (
            s.el_measured
            and ref is not None
            and s.el <= ref[self.el_key] + self.reference_margin
            and s.ma <= ref["ma"] + self.reference_margin
        )

    def at_reference_nll(self, s: SequenceState) -> bool:
        """Its suffix already as unlikely as under the reference model (within the margin)."""
        ref = self.reference[s.id] if self.reference else None
        return ref is not None and s.suffix_nll >= ref["suffix_nll"] - self.reference_nll_margin

    def decision(self, s: SequenceState) -> Decision:
        done = "criteria" if self.own(s) else "reference" if self.as_reference(s) else None
        return Decision(done, self.at_reference_nll(s))

    def reachable(self, s: SequenceState) -> bool:
        """Whether EL could make `s` done given its MA: the only place EL matters."""
        ref = self.reference[s.id] if self.reference else None
        return s.ma < self.ma_max or (ref is not None and s.ma <= ref["ma"] + self.reference_margin)


class StoppingRule:
    """Shared answers; a rule overrides what it decides differently."""

    name = ""
    scores_el = True  # False: the rule decides on MA alone (no EL, no suffix NLL)
    audits = True  # the run's result is audited (`audit.enabled`)

    def __init__(self, criteria: Criteria):
        self.criteria = criteria

    @classmethod
    def check_config(cls, config) -> None:
        """Refuse settings that do nothing under this rule (a message that names the fix)."""

    def decide(self, states: list[SequenceState]) -> list[SequenceState]:
        return [s.decided(self.criteria.decision(s)) for s in states]

    def initial_active(self, states: list[SequenceState]) -> list[str]:
        return [s.id for s in states]

    def refuse_already_forgotten(self, states: list[SequenceState]) -> None:
        """A forget set the model has already forgotten is refused before anything is written."""

    def el_needed(self, states: list[SequenceState], everything: bool) -> set[str]:
        if everything or self.criteria.el_every_epoch:
            return {s.id for s in states}
        return self._el_needed(states)

    def _el_needed(self, states: list[SequenceState]) -> set[str]:
        return {s.id for s in states}

    def to_check(self, states: list[SequenceState], active: list[str]) -> list[str]:
        return list(active)

    def next_active(
        self, states: list[SequenceState], forgotten: set[str], active: list[str]
    ) -> list[str]:
        return list(active)

    def stop_reason(self, states: list[SequenceState], active: list[str], epoch: int):
        return "incomplete" if epoch >= self.criteria.max_epochs else None

    def not_done(self, states: list[SequenceState]) -> list[dict]:
        """The sequences still extractable by the per-sequence criteria, with the
        reference's levels beside theirs: what an `incomplete` (or mean-rule) run leaves."""
        key, reference = self.criteria.el_key, self.criteria.reference
        left = []
        for s in states:
            if s.done is None:
                ref = reference[s.id] if reference else {}
                left.append(
                    {"id": s.id, "el": s.el, "ma": s.ma, "suffix_nll": s.suffix_nll}
                    | {f"reference_{k}": ref.get(k) for k in (key, "ma", "suffix_nll") if ref}
                )
        return left
