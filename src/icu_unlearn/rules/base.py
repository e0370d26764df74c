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


def stands_out(
    nll_model: float, nll_reference: float | None, holdout_median: float | None, margin: float
) -> bool | None:
    """A record forgotten *too* well, which a membership test picks out: its suffix NLL
    (nats a token) more than `margin` above both the reference model's NLL on the same
    suffix and the median NLL of never-seen holdout text under the same model; with one
    of the two, above that one; None with neither. The run's decision and the audit's
    flag are this one definition."""
    baselines = [b for b in (nll_reference, holdout_median) if b is not None]
    if not baselines:
        return None
    return nll_model > max(baselines) + margin


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
    # never-seen text's median suffix NLL under the model (audit.holdout; None without one)
    holdout_nll: float | None = None
    stands_out_margin: float = 1.0  # audit.stands_out_margin
    # the forget term pulls to a target (forget_target reference or calibrated), which is
    # its own fixed point: no sequence needs pausing to keep it from overshooting
    targeted: bool = False

    @property
    def el_key(self) -> str:
        return f"el_{self.el_n}"

    def own(self, s: SequenceState) -> bool:
        """Its own EL and MA under the thresholds (EL not measured: cannot hold)."""
        return s.el_measured and s.el < self.el_max and s.ma < self.ma_max

    def as_reference(self, s: SequenceState) -> bool:
        """No more extractable than under the reference model: EL and MA within the margin,
        and EL above `el_max` (the audit's EL leak test) only where the reference's is too,
        so that a record the run calls done is never one the audit calls leaked on EL
        (`audit.verdict`: a test that fires under the model alone)."""
        ref = self.reference[s.id] if self.reference else None
        return (
            s.el_measured
            and ref is not None
            and s.el <= ref[self.el_key] + self.reference_margin
            and s.ma <= ref["ma"] + self.reference_margin
            and (s.el <= self.el_max or ref[self.el_key] > self.el_max)
        )

    def level(self, s: SequenceState) -> float | None:
        """The suffix NLL of never-seen text for `s`: the reference model's on the same
        suffix, or without one the holdout's median under the model; None with neither."""
        if self.reference:
            return self.reference[s.id]["suffix_nll"]
        return self.holdout_nll

    def at_reference_nll(self, s: SequenceState) -> bool:
        """Its suffix already as unlikely as never-seen text (`level`), within
        `reference_nll_margin`: more ascent would make it stand out, and a suffix still
        more likely than that gives itself away to a likelihood test."""
        level = self.level(s)
        return level is not None and s.suffix_nll >= level - self.reference_nll_margin

    def stands_out(self, s: SequenceState) -> bool | None:
        """Forgotten too well: its suffix far less likely than both never-seen baselines
        (`stands_out`, the audit's definition). None: no baseline to compare with."""
        ref = self.reference[s.id] if self.reference else None
        return stands_out(
            s.suffix_nll,
            None if ref is None else ref["suffix_nll"],
            self.holdout_nll,
            self.stands_out_margin,
        )

    def decision(self, s: SequenceState) -> Decision:
        """Done takes both sides of "as if never trained": no more extractable than the
        criteria (or the reference) allow, and, where there is a never-seen level to
        compare with, a suffix likelihood within the band around it: not more likely by
        more than `reference_nll_margin`, not standing out below it."""
        out = self.stands_out(s)
        at_level = self.at_reference_nll(s)
        done = None
        if not out and (at_level or self.level(s) is None):
            done = "criteria" if self.own(s) else "reference" if self.as_reference(s) else None
        return Decision(done, at_level, out)

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

    def pushed(self, states: list[SequenceState]) -> list[str]:
        """Under a forget target: the records at never-seen text's level (neither likelier
        by more than the margin nor standing out) that are still not done, which a pull to
        the level alone leaves extractable; the forget term pushes them a little past it."""
        if not self.criteria.targeted:
            return []
        return [s.id for s in states if s.paused and s.done is None and not s.decision.stands_out]

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
                row = {"id": s.id, "el": s.el, "ma": s.ma, "suffix_nll": s.suffix_nll}
                if s.decision is not None and s.decision.stands_out:
                    row["stands_out"] = True  # not done for that: far less likely than unseen text
                left.append(
                    row | {f"reference_{k}": ref.get(k) for k in (key, "ma", "suffix_nll") if ref}
                )
        return left
