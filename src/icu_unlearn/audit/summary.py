"""Per-sequence rows with their verdicts, and the aggregates of a set of them."""

from __future__ import annotations

import statistics

from ..audit_settings import AuditSettings
from ..data.forget import ForgetSample
from .membership import MIA_SCORES, auc, privleak
from .verdict import VERDICTS, leak_tests, stands_out, verdict


def sequence_rows(
    samples: list[ForgetSample],
    measured: list[dict],
    reference: list[dict] | None,
    holdout: list[dict],
    settings: AuditSettings,
) -> list[dict]:
    """One row per forget sequence: who it is (hash, never text), verdict, measurements."""
    holdout_median = statistics.median(h["model"]["loss"] for h in holdout) if holdout else None
    rows = []
    for i, sample in enumerate(samples):
        ref = reference[i] if reference is not None else None
        fired = leak_tests(measured[i], settings)
        fired_ref = leak_tests(ref, settings) if ref is not None else None
        nll_ref = ref["membership"]["loss"] if ref is not None else None
        rows.append(
            {
                "id": sample.id,
                "sha256": sample.content_hash(),
                "prefix_tokens": sample.prefix_length,
                "suffix_tokens": len(sample.suffix_ids),
                "verdict": verdict(fired, fired_ref),
                "leaked_by": fired,
                "reference_leaked_by": fired_ref,
                "stands_out": stands_out(
                    measured[i]["membership"]["loss"],
                    nll_ref,
                    holdout_median,
                    settings.stands_out_margin,
                ),
                "model": measured[i],
                "reference": ref,
            }
        )
    return rows


def holdout_rows(
    samples: list[ForgetSample], measured: list[dict], reference: list[dict] | None
) -> list[dict]:
    return [
        {
            "id": s.id,
            "sha256": s.content_hash(),
            "model": measured[i],
            "reference": reference[i] if reference is not None else None,
        }
        for i, s in enumerate(samples)
    ]


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _side(measurements: list[dict], settings: AuditSettings) -> dict:
    """Means and counts of one model's measurements over the forget sequences."""
    greedy = [m["greedy"] for m in measurements]
    el = f"el_{settings.el_n}"
    sampling = [m["sampling"] for m in measurements if m["sampling"] is not None]
    beam = [m["beam"] for m in measurements if m["beam"] is not None]
    probabilistic = []
    for j, scheme in enumerate(settings.schemes):
        chances = [m["probabilistic"][j]["chance"] for m in measurements]
        probabilistic.append(
            {
                "scheme": scheme.label(),
                "mean_chance": {n: _mean(c[n] for c in chances) for n in chances[0]},
            }
        )
    return {
        "greedy_exact": sum(g["exact"] for g in greedy),
        el: _mean(g[el] for g in greedy),
        "ma": _mean(g["ma"] for g in greedy),
        "extraction_strength": _mean(g["extraction_strength"] for g in greedy),
        "loss": _mean(m["membership"]["loss"] for m in measurements),
        "probabilistic": probabilistic,
        "sampling": {
            "best_exact": sum(s["best_exact"] for s in sampling),
            "any_exact": sum(s["any_exact"] for s in sampling),
            "mean_longest_run": _mean(s["longest_run"] for s in sampling),
            "max_longest_run": max(s["longest_run"] for s in sampling),
        }
        if sampling
        else None,
        "beam_exact": sum(b["exact"] for b in beam) if beam else None,
    }


def _membership(sequences: list[dict], holdout: list[dict], with_reference: bool) -> dict:
    """AUC of forget vs holdout per attack, under the model and the reference, and MUSE's
    PrivLeak in percent (`membership.privleak`; the reference as MUSE's retrained model)."""
    result = {}
    for attack, score in MIA_SCORES.items():
        auc_m = auc(
            [score(s["model"]["membership"]) for s in sequences],
            [score(h["model"]) for h in holdout],
        )
        auc_r = (
            auc(
                [score(s["reference"]["membership"]) for s in sequences],
                [score(h["reference"]) for h in holdout],
            )
            if with_reference
            else None
        )
        result[attack] = {
            "auc_model": auc_m,
            "auc_reference": auc_r,
            "privleak": privleak(auc_m, auc_r),
        }
    return result


def _holdout_side(rows: list[dict]) -> dict:
    return {
        "nll": _mean(r["loss"] for r in rows),
        "ma": _mean(r["ma"] for r in rows),
        "suffix_ma": _mean(r["suffix_ma"] for r in rows),
    }


def aggregates(sequences: list[dict], holdout: list[dict], settings: AuditSettings) -> dict:
    with_reference = bool(sequences) and sequences[0]["reference"] is not None
    flags = [s["stands_out"] for s in sequences]
    fired = [name for s in sequences for name in s["leaked_by"]]
    return {
        "num_sequences": len(sequences),
        "verdicts": {v: sum(s["verdict"] == v for s in sequences) for v in VERDICTS},
        "leaked_by": {name: fired.count(name) for name in dict.fromkeys(fired)},
        "stands_out": None if None in flags else sum(flags),
        "model": _side([s["model"] for s in sequences], settings),
        "reference": _side([s["reference"] for s in sequences], settings)
        if with_reference
        else None,
        "membership": _membership(sequences, holdout, with_reference) if holdout else None,
        "holdout": {
            "num_sequences": len(holdout),
            "model": _holdout_side([h["model"] for h in holdout]),
            "reference": _holdout_side([h["reference"] for h in holdout])
            if with_reference
            else None,
        }
        if holdout
        else None,
    }
