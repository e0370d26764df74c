"""The table that chooses the default forget target: on the demo's subjects, each method
with the paper's ascent term and with the reference target (KL to the never-planted
model), dpo as it is; every result audited (membership against the holdout, the
reference beside it), its kept sequences and its perplexity measured.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/forget_target.py \
        --planted runs/demo/planted --out runs/forget-target

Resumable: every finished run and measurement is kept in --out, and the table
(benchmarks/results/forget_target.md) is rewritten after each one.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from icu_unlearn import load_config, unlearn
from icu_unlearn.evaluate import EvalSettings, evaluate
from icu_unlearn.io import atomic_write_json, atomic_write_text
from icu_unlearn.metrics.similarity import token_entropy
from icu_unlearn.metrics.utility import evaluate_utility
from icu_unlearn.models import load_model_and_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FORGET = "lm-extraction:ids=1670,13379,10234,4719"  # the demo's first half of 8_0
KEEP = "lm-extraction:ids=7003,2831,13014,11979"  # its second half: planted, not to forget
HOLDOUT = "lm-extraction:8_1"  # never planted
REFERENCE = "smollm2-135m"  # the model before planting
DEMO = {"lr": 1e-4, "batch_size": 2, "max_epochs": 30, "analogous.pool_limit": 500}
# in the order they run: the candidates for the default first
RUNS = {
    f"{method}-{target}": {"method": method, "forget_target": target}
    for method in ("icu", "kumpr", "npo", "kl", "llmu")
    for target in ("reference", "ascent")
} | {"dpo": {"method": "dpo", "forget_target": "ascent"}}


def _cached(path: Path, compute):
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    atomic_write_json(path, value)
    return value


def _run(name: str, planted: str, out: Path) -> dict:
    run_dir = out / name
    if (run_dir / "manifest.json").is_file():
        manifest = json.loads((run_dir / "manifest.json").read_text())
        if manifest["status"] not in ("running", "interrupted"):
            return manifest
    keys = {"model": planted, "forget": FORGET, "out": run_dir, "audit.holdout": HOLDOUT}
    keys |= DEMO | {"stop.reference": REFERENCE} | RUNS[name]
    config = load_config(None, [f"{k}={v}" for k, v in keys.items()])
    resume = (run_dir / "checkpoints" / "LATEST").is_file()
    started = time.perf_counter()
    manifest = unlearn(config, resume=resume, overwrite=not resume, progress=False).manifest
    return manifest | {"wall_seconds": round(time.perf_counter() - started, 1)}


def _perplexity(model: str) -> dict:
    net, tokenizer = load_model_and_tokenizer(model)
    result = evaluate_utility(net, tokenizer, tasks=["pile", "wikitext"], limit=10, progress=False)
    return {name: task["value"] for name, task in result["tasks"].items()}


def _generations(model: str) -> dict:
    """Kept MA, and each forgotten sequence's greedy generation with its entropy and
    repetition (the share of repeated 4-grams)."""
    settings = EvalSettings(el_window=True)
    kept = evaluate(model, KEEP, settings=settings).summary["ma"]
    rows = evaluate(model, FORGET, settings=settings).samples
    _, tokenizer = load_model_and_tokenizer(model)
    out = {}
    for r in rows:
        ids = tokenizer(r["generation"], add_special_tokens=False).input_ids
        grams = [tuple(ids[i : i + 4]) for i in range(len(ids) - 3)]
        out[r["id"]] = {
            "generation": r["generation"],
            "entropy": token_entropy(ids),
            "repetition": 1 - len(set(grams)) / len(grams) if grams else 0.0,
        }
    return {"keep_ma": kept, "forget": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", default="runs/demo/planted", help="the demo's planted model")
    parser.add_argument("--out", default="runs/forget-target")
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else list(RUNS)
    measured = {
        "planted": {
            "ppl": _cached(out / "planted.ppl.json", lambda: _perplexity(args.planted)),
            "gen": _cached(out / "planted.gen.json", lambda: _generations(args.planted)),
            "reference_gen": _cached(out / "reference.gen.json", lambda: _generations(REFERENCE)),
        }
    }
    manifests = {}
    for name in names:
        manifests[name] = _cached(
            out / f"{name}.manifest.json", lambda n=name: _run(n, args.planted, out)
        )
        model = str(out / name / "model")
        measured[name] = {
            "ppl": _cached(out / f"{name}.ppl.json", lambda m=model: _perplexity(m)),
            "gen": _cached(out / f"{name}.gen.json", lambda m=model: _generations(m)),
            "audit": json.loads((out / name / "audit.json").read_text()),
        }
        write_results(manifests, measured, args)


def _gap(m: dict) -> str:
    per = (m.get("likelihood_vs_reference") or {}).get("per_sequence") or {}
    if not per:
        return "–"
    return f"{sum(abs(g['gap']) for g in per.values()) / len(per):.2f}"


def _mia(audit: dict, key: str) -> str:
    x = (audit["aggregates"].get("membership") or {}).get(key) or {}
    if not x:
        return "–"
    leak = x.get("privleak")
    return f"{x['auc_model']:.2f} / {x['auc_reference']:.2f}" + (
        "" if leak is None else f" ({leak:+.0f})"
    )


def write_results(manifests: dict, measured: dict, args) -> None:
    planted = measured["planted"]
    lines = [
        "# The forget target on the demo's subjects: ascent against the never-planted reference",
        "",
        "Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/forget_target.py --planted {args.planted}`",
        f"Machine: {platform.machine()}, 2 CPU cores shared with other work, torch CPU, one thread. "
        f"SmolLM2-135M with lm-extraction:8_0 planted; forget {FORGET}; keep {KEEP}; holdout "
        f"{HOLDOUT}; reference {REFERENCE} (the model before planting). Every run: stop.scope each, "
        "stop.reference set, audit.holdout set; " + ", ".join(f"{k}={v}" for k, v in DEMO.items()),
        "",
        "Columns: peak RSS: the manifest's, the benchmark process's peak so far (runs in one "
        "process share it: only the first run's, or one run per --only, is its own); audit verdicts leaked / as reference / not extractable; stands out (count); "
        "membership AUC forget-vs-holdout under the model / under the reference, with PrivLeak "
        "as the audit reports it; |NLL gap|: mean over the forgotten suffixes of |suffix NLL - the "
        "reference's|, nats a token; kept MA of the 4 planted-and-kept sequences (planted: "
        f"{planted['gen']['keep_ma']:.3f}); perplexity change from the planted model; entropy and "
        "repetition (share of repeated 4-grams) of the forgotten suffixes' greedy generations "
        "(reference model: " + _gen_cells(planted["reference_gen"]) + ").",
        "",
        "| run | status | epochs | wall s | peak RSS MB | verdicts | stands out | LOSS AUC | Min-K%++ AUC | |NLL gap| | kept MA | Pile ppl | Wikitext ppl | entropy / repetition |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in manifests.items():
        a = measured[name]["audit"]["aggregates"]
        v = a["verdicts"]
        ppl = measured[name]["ppl"]
        lines.append(
            f"| {name} | {m['status']} | {m['epochs']} | {m.get('wall_seconds', '–')} | "
            f"{m.get('peak_rss_mb', '–')} | "
            f"{v['leaked']} / {v['as_reference']} / {v['not_extractable']} | {a.get('stands_out')} | "
            f"{_mia(measured[name]['audit'], 'loss')} | {_mia(measured[name]['audit'], 'min_k_pp')} | "
            f"{_gap(m)} | {measured[name]['gen']['keep_ma']:.3f} | "
            + " | ".join(f"{ppl[t] / planted['ppl'][t] - 1:+.1%}" for t in ("pile", "wikitext"))
            + f" | {_gen_cells(measured[name]['gen'])} |"
        )
    for name in manifests:
        lines += ["", f"## {name}: each forgotten record's generation", ""]
        lines += ["| id | planted | after | reference model |", "|---|---|---|---|"]
        for i, g in measured[name]["gen"]["forget"].items():
            cells = [
                planted["gen"]["forget"][i]["generation"],
                g["generation"],
                planted["reference_gen"]["forget"][i]["generation"],
            ]
            lines.append(f"| {i} | " + " | ".join(_md(c) for c in cells) + " |")
    atomic_write_text(ROOT / "benchmarks" / "results" / "forget_target.md", "\n".join(lines) + "\n")


def _gen_cells(gen: dict) -> str:
    rows = list(gen["forget"].values())
    ent = sum(r["entropy"] for r in rows) / len(rows)
    rep = sum(r["repetition"] for r in rows) / len(rows)
    return f"{ent:.2f} / {rep:.2f}"


def _md(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= 70 else text[:69] + "…"


if __name__ == "__main__":
    main()
