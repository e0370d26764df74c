"""The stopping rules: when a sequence is done, which train next, when the run ends.

One small module per rule, listed in a plain dict keyed by `stop.scope`; planting
(`icu-unlearn memorize`) has its own. Adding a rule: a module with a `StoppingRule`
subclass and one line here (docs/architecture.md).
"""

from __future__ import annotations

from . import each, mean
from .base import Criteria, StoppingRule
from .planting import Planting
from .state import Decision, SequenceState

RULES = {
    "each": each.RULE,
    "mean": mean.RULE,
}

__all__ = ["RULES", "Criteria", "Decision", "SequenceState", "StoppingRule", "rule_for"]


def rule_for(config, limits: dict, reference: dict | None = None) -> StoppingRule:
    """The rule `config` runs under, with the run's thresholds and the reference model's
    per-sequence scores (`criteria.reference_rows`)."""
    stop = config.stop
    criteria = Criteria(
        el_n=stop.el_n,
        el_max=limits["el_max"],
        ma_max=limits["ma_max"],
        max_epochs=config.max_epochs,
        reference=reference,
        reference_margin=stop.reference_margin,
        reference_nll_margin=stop.reference_nll_margin,
        el_every_epoch=config.log.el_every_epoch,
        readmit=config.refinement.readmit,
        holdout_nll=limits.get("holdout_nll"),
        stands_out_margin=config.audit.stands_out_margin,
        targeted=config.resolved_forget_target() != "ascent",
    )
    if config.method == "memorize":
        return Planting(criteria, config.memorize.target_ma)
    return RULES[stop.scope](criteria)
