"""The demo's subjects, three ways, with the audit: ICU under `stop.scope: each` with the
never-planted model as the reference, ICU under the paper's `mean` rule, and KUMPR under
`each` with the reference, all from one planted SmolLM2-135M; each result audited (the
planted model too) with the quantization and relearning attacks.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/demo_scopes.py \
        --planted runs/demo/planted --out runs/demo-scopes

Every finished step is kept in --out (runs, audits, perplexities), so a killed benchmark
goes on where it stopped. Writes benchmarks/results/demo_scopes.md and audit_demo.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from icu_unlearn import load_config
from icu_unlearn.audit import AuditSettings, audit
from icu_unlearn.evaluate import EvalSettings, evaluate
from icu_unlearn.io import atomic_write_json, atomic_write_text
from icu_unlearn.metrics.utility import evaluate_utility
from icu_unlearn.models import load_model_and_tokenizer
from icu_unlearn.train import finish_run

ROOT = Path(__file__).resolve().parents[1]
FORGET = "lm-extraction:ids=1670,13379,10234,4719"  # the demo's first half of 8_0
KEEP = "lm-extraction:ids=7003,2831,13014,11979"  # its second half: planted, not to forget
HOLDOUT = "lm-extraction:8_1"  # never planted
REFERENCE = "smollm2-135m"  # the model before planting
RUNS = {
    "icu-each": {"method": "icu", "stop.scope": "each", "stop.reference": REFERENCE},
    "icu-mean": {"method": "icu", "stop.scope": "mean"},
    "kumpr-each": {"method": "kumpr", "stop.scope": "each", "stop.reference": REFERENCE},
}
DEMO = {"lr": 1e-4, "batch_size": 2, "max_epochs": 30, "analogous.pool_limit": 500}


def _cached(path: Path, compute):
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_json(path, value)
    return value


def _run(name: str, planted: str, out: Path, overrides: dict | None = None) -> dict:
    """The run `name` (its keys: RUNS[name], or `overrides`) from the planted model."""
    keys = {"model": planted, "forget": FORGET, "out": out / name, "audit.holdout": HOLDOUT}
    keys |= DEMO | (RUNS[name] if overrides is None else overrides)
    return finish_run(load_config(None, [f"{k}={v}" for k, v in keys.items()]))


def _perplexity(model: str) -> dict:
    net, tokenizer = load_model_and_tokenizer(model)
    result = evaluate_utility(net, tokenizer, tasks=["pile", "wikitext"], limit=10, progress=False)
    return {name: task["value"] for name, task in result["tasks"].items()}


def _audit(model: str, attacks: list[str]) -> dict:
    settings = AuditSettings(el_window=True)
    started = time.perf_counter()
    result = audit(
        model,
        FORGET,
        holdout=HOLDOUT,
        reference=REFERENCE,
        settings=settings,
        attacks=["sample:20", "beam:2", *attacks],
    )
    return result.to_dict() | {
        "summary": result.summary_line(),
        "seconds": time.perf_counter() - started,
    }


def _keep_ma(model: str) -> float:
    return evaluate(model, KEEP, settings=EvalSettings(el_window=True)).summary["ma"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", default="runs/demo/planted", help="the demo's planted model")
    parser.add_argument("--out", default="runs/demo-scopes")
    parser.add_argument("--attacks", default="quantize:4,relearn")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    attacks = args.attacks.split(",") if args.attacks else []
    subjects = {"planted": args.planted}
    manifests = {}
    for name in RUNS:
        manifests[name] = _run(name, args.planted, out)
        subjects[name] = str(out / name / "model")
    measured = {}
    for name, model in subjects.items():
        measured[name] = {
            "ppl": _cached(out / f"{name}.ppl.json", lambda m=model: _perplexity(m)),
            "keep_ma": _cached(out / f"{name}.keep.json", lambda m=model: _keep_ma(m)),
            "audit": _cached(out / f"{name}.audit.json", lambda m=model: _audit(m, attacks)),
        }
    write_results(manifests, measured, args)


def _seq_table(manifest: dict) -> list[str]:
    last = manifest["epochs"]
    rows = [
        json.loads(x)
        for x in (Path(manifest["config"]["out"]) / "samples.jsonl").read_text().splitlines()
    ]
    ref = manifest.get("reference_scores") or {}
    lines = [
        "| id | end | EL10 (p>=t0) | MA | suffix NLL | reference EL10 / MA / NLL |",
        "|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["epoch"] == last):
        f = ref.get(r["id"])
        refs = f"{f['el_10']:.3f} / {f['ma']:.3f} / {f['suffix_nll']:.2f}" if f else "–"
        end = r.get("done") or "EXTRACTABLE"
        lines.append(
            f"| {r['id']} | {end} | {r['el_10']:.3f} | {r['ma']:.3f} | {r['suffix_nll']:.2f} | {refs} |"
        )
    return lines


def run_cells(m: dict) -> str:
    """A run's status, epochs, forget EL/MA, ids still extractable, mean NLL gap cells."""
    gap = (m.get("likelihood_vs_reference") or {}).get("mean_gap")
    left = ", ".join(r["id"] for r in m["still_extractable"]) or "none"
    return (
        f"{m['status']} | {m['epochs']} | {m['after']['el_10']:.3f} / {m['after']['ma']:.3f} | "
        f"{left} | {'–' if gap is None else f'{gap:+.2f}'}"
    )


def ppl_cells(ppl: dict, planted: dict) -> str:
    """Pile and Wikitext perplexity cells, each with its change from the planted model's."""
    return " | ".join(
        f"{ppl[task]:.2f} ({ppl[task] / planted[task] - 1:+.1%})" for task in ("pile", "wikitext")
    )


def write_results(manifests: dict, measured: dict, args) -> None:
    planted = measured["planted"]
    head = [
        "# The demo's subjects under `each` (with the never-planted reference) and `mean`",
        "",
        f"Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/demo_scopes.py --planted {args.planted}`",
        f"Machine: {platform.processor() or platform.machine()}, 2 CPU cores, torch CPU. "
        f"SmolLM2-135M with lm-extraction:8_0 planted (the demo's planted model); forget {FORGET}, "
        f"keep {KEEP}; the reference is the model before planting ({REFERENCE}). Demo settings: "
        + ", ".join(f"{k}={v}" for k, v in DEMO.items()),
        "",
        "| run | status | epochs | forget mean EL10 / MA | still extractable | mean NLL gap to reference | keep MA | Pile ppl | Wikitext ppl |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| planted | – | – | {manifests['icu-each']['before']['el_10']:.3f} / {manifests['icu-each']['before']['ma']:.3f} | – | – | "
        f"{planted['keep_ma']:.3f} | {planted['ppl']['pile']:.2f} | {planted['ppl']['wikitext']:.2f} |",
    ]
    for name, m in manifests.items():
        head.append(
            f"| {name} | {run_cells(m)} | {measured[name]['keep_ma']:.3f} | "
            f"{ppl_cells(measured[name]['ppl'], planted['ppl'])} |"
        )
    for name, m in manifests.items():
        head += ["", f"## {name}: every forgotten sequence at the end", "", *_seq_table(m)]
    atomic_write_text(ROOT / "benchmarks" / "results" / "demo_scopes.md", "\n".join(head) + "\n")
    atomic_write_text(ROOT / "benchmarks" / "results" / "audit_demo.md", _audit_md(measured, args))


def _audit_md(measured: dict, args) -> str:
    lines = [
        "# Audit of the demo's subjects: beyond greedy decoding",
        "",
        "Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/demo_scopes.py`",
        f"(audits: forget {FORGET}, holdout {HOLDOUT}, reference {REFERENCE}; 20 sampling-attack "
        "samples at top-k 10 and 2 beams, to fit a 2-core CPU; p(100) from the exact extraction "
        "probability under temperature 1, top-k 40).",
        "",
        "| model | attack | verdicts (leaked / as reference / not extractable) | stands out | mean p(100) | best sampling run (tokens) | LOSS AUC model / reference | zlib AUC | Min-K% AUC | Min-K%++ AUC | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in measured.items():
        a = m["audit"]
        lines.append(_audit_row(name, "none", a["aggregates"], a["seconds"]))
        for spec, attacked in a.get("attacks", {}).items():
            lines.append(_audit_row(name, spec, attacked["aggregates"], None))
    for name, m in measured.items():
        lines += ["", f"## {name}", "", m["audit"]["summary"]]
        for s in m["audit"]["sequences"]:
            p = s["model"]["probabilistic"][0]["chance"]["100"]
            run = (s["model"].get("sampling") or {}).get("longest_run")
            lines.append(
                f"- {s['id']}: {s['verdict']}"
                + (f" by {', '.join(s['leaked_by'])}" if s["leaked_by"] else "")
                + (" (stands out)" if s.get("stands_out") else "")
                + f"; p(100) {p:.3g}; longest sampled run {run}; suffix NLL "
                f"{s['model']['membership']['loss']:.2f} (reference {s['reference']['membership']['loss']:.2f})"
            )
    return "\n".join(lines) + "\n"


def _audit_row(name: str, attack: str, agg: dict, seconds) -> str:
    v = agg["verdicts"]
    model = agg["model"]
    p100 = model["probabilistic"][0]["mean_chance"]["100"]
    run = (model.get("sampling") or {}).get("max_longest_run")
    mia = agg.get("membership") or {}

    def auc(key):
        x = mia.get(key) or {}
        return (
            f"{x.get('auc_model', float('nan')):.2f} / {x.get('auc_reference', float('nan')):.2f}"
            if x
            else "–"
        )

    secs = "–" if seconds is None else f"{seconds:.0f}"
    return (
        f"| {name} | {attack} | {v['leaked']} / {v['as_reference']} / {v['not_extractable']} | "
        f"{agg.get('stands_out')} | {p100:.3g} | {run} | {auc('loss')} | {auc('zlib')} | "
        f"{auc('min_k')} | {auc('min_k_pp')} | {secs} |"
    )


if __name__ == "__main__":
    main()
