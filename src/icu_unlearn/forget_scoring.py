"""The forget set scored and decided: one epoch's rows and states, under the run's rule.

Used at set-up (epoch 0, before the model is prepared) and after every epoch.
"""

from __future__ import annotations

from .evaluate import EvalSettings, score_samples
from .rules import SequenceState, StoppingRule


def score_forget_set(
    rule: StoppingRule,
    model,
    tokenizer,
    forget: list,
    scoring: EvalSettings,
    procs,
    timings: dict | None = None,
    everything: bool = True,
    drafts: dict | None = None,
) -> tuple[list[dict], list[SequenceState]]:
    """Every forget sequence's MA (and, for an unlearning rule, its suffix NLL and
    generation; its EL where a decision needs it, or everywhere with `everything`),
    decided by `rule`.

    `drafts`: last scoring's continuations, verified instead of decoded
    (`evaluate.score_samples`) and updated.

    Returns the rows (samples.jsonl's form, each with its decision's fields) and the
    decided states, in forget-set order.
    """
    el_key = f"el_{scoring.el_n}"
    if not rule.scores_el:  # planting stops on MA: nothing else to score
        rows = score_samples(
            model, tokenizer, forget, scoring, procs=procs, similarity=False, el=False
        )
        return rows, [SequenceState.from_row(r, el_key) for r in rows]

    def el_for(rows: list[dict]) -> set[str]:
        return rule.el_needed([SequenceState.from_row(r, el_key) for r in rows], everything)

    rows = score_samples(
        model, tokenizer, forget, scoring, timings=timings, procs=procs, el_for=el_for,
        suffix_nll=True, drafts=drafts,
    )  # fmt: skip
    states = rule.decide([SequenceState.from_row(r, el_key) for r in rows])
    for r, s in zip(rows, states, strict=True):  # the decision, recorded with its scores
        r |= s.decision.fields()
    return rows, states
