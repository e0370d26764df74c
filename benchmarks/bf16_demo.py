"""The demo's ICU run (`demo.icu_settings`) in fp32 and in bf16, from one planted model:
time, epochs, every per-sequence decision of every epoch, and the end-of-run audits.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/bf16_demo.py \
        --planted runs/demo/planted --out runs/bf16-demo

Both runs take the demo's default settings but `precision` (so its reference model,
pool and holdout; its kept half watched before and after only, as the demo did when
this was measured, not held by `probe.retain` as it is now), on the same machine and
thread count: run it on an idle machine for
a time ratio worth reading. A finished run is kept in --out and a killed one resumes
from its newest checkpoint, so a stopped benchmark goes on where it stopped (a resumed
run's time is the sum of its epochs' and its audit's, not its wall time). Writes
benchmarks/results/bf16_demo.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from icu_unlearn import load_config
from icu_unlearn.data.forget import load_forget_set
from icu_unlearn.demo import DemoSettings, halves, icu_settings, ids_spec
from icu_unlearn.io import atomic_write_json, atomic_write_text
from icu_unlearn.models import load_model_and_tokenizer
from icu_unlearn.train import finish_run

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def _forget_spec(settings: DemoSettings) -> str:
    """The demo's forget set: the first half of the planted sequences (`run_demo`)."""
    _, tokenizer = load_model_and_tokenizer(settings.model)
    ids = [s.id for s in load_forget_set(settings.plant, tokenizer, 50, settings.data_dir)]
    return ids_spec(halves(ids, settings.forget_count)[0])


def _run(precision: str, planted: str, forget: str, out: Path, data_dir: str | None) -> Path:
    """The demo's ICU run at `precision`, finished or resumed; its run directory."""
    run_dir = out / precision
    settings = DemoSettings(precision=precision, data_dir=data_dir, progress=False)
    finish_run(load_config(None, icu_settings(settings, planted, forget, run_dir)))
    return run_dir


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _measured(run_dir: Path) -> dict:
    """What the comparison reads of one run: its record, its epochs, its per-sequence rows."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    epochs = [e for e in _lines(run_dir / "epochs.jsonl") if "diverged" not in e]
    audit_file = run_dir / "audit.json"
    audit = json.loads(audit_file.read_text()) if audit_file.is_file() else None
    return {
        "status": manifest["status"],
        "epochs": manifest["epochs"],
        "epoch_seconds": round(sum(e["seconds"] for e in epochs), 1),
        "train_seconds": round(sum(e["train_seconds"] for e in epochs), 1),
        "audit_seconds": audit["settings"]["seconds"] if audit else None,
        "audit": manifest.get("audit"),
        "audit_sequences": [
            {"id": s["id"], "verdict": s.get("verdict"), "leaked_by": s.get("leaked_by")}
            for s in (audit["sequences"] if audit else [])
        ],
        "rows": [
            {
                k: r.get(k)
                for k in (
                    "epoch",
                    "id",
                    "done",
                    "stands_out",
                    "el_10",
                    "ma",
                    "suffix_nll",
                    "active",
                    "removed",
                )
            }  # fmt: skip
            for r in _lines(run_dir / "samples.jsonl")
        ],
    }


def _decisions(rows: list[dict]) -> dict[tuple[int, str], tuple]:
    """(epoch, id) -> what the run decided of that sequence then."""
    return {(r["epoch"], r["id"]): (r["done"], r["stands_out"], r["active"]) for r in rows}


def compare(fp32: dict, bf16: dict) -> dict:
    """Every difference between the two runs' per-sequence decisions and audit verdicts."""
    a, b = _decisions(fp32["rows"]), _decisions(bf16["rows"])
    common = sorted(set(a) & set(b))
    differ = [
        {"epoch": e, "id": i, "fp32": a[(e, i)], "bf16": b[(e, i)]}
        for e, i in common
        if a[(e, i)] != b[(e, i)]
    ]
    verdicts_a = {s["id"]: s["verdict"] for s in fp32["audit_sequences"]}
    verdicts_b = {s["id"]: s["verdict"] for s in bf16["audit_sequences"]}
    verdicts = [
        {"id": i, "fp32": verdicts_a.get(i), "bf16": verdicts_b.get(i)}
        for i in sorted(set(verdicts_a) | set(verdicts_b))
        if verdicts_a.get(i) != verdicts_b.get(i)
    ]
    ratio = fp32["epoch_seconds"] / bf16["epoch_seconds"] if bf16["epoch_seconds"] else None
    audit_ratio = None
    if fp32["audit_seconds"] and bf16["audit_seconds"]:
        audit_ratio = fp32["audit_seconds"] / bf16["audit_seconds"]
    return {
        "time_ratio": ratio,  # fp32 seconds / bf16 seconds over the epochs
        "audit_time_ratio": audit_ratio,
        "decisions_compared": len(common),
        "decisions_differ": differ,
        "verdicts_differ": verdicts,
    }


def _first_done(rows: list[dict]) -> dict[str, int | None]:
    first: dict[str, int | None] = {}
    for r in sorted(rows, key=lambda r: r["epoch"]):
        first.setdefault(r["id"], None)
        if r["done"] and first[r["id"]] is None:
            first[r["id"]] = r["epoch"]
    return first


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_results(runs: dict, comparison: dict, args, machine: dict, results: Path) -> None:
    lines = [
        "# bf16 against fp32 on the demo's ICU run",
        "",
        "```",
        "OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/bf16_demo.py "
        f"--planted {args.planted} --out {args.out}",
        "```",
        "",
        f"Machine: {machine['cpu']}, torch CPU capability {machine['capability']}, "
        f"{machine['threads']} thread(s), torch {machine['torch']}. The demo's ICU run "
        "(`demo.icu_settings` with the demo's defaults: its reference model, pool and holdout) "
        "from one planted model, once per precision; epoch seconds leave out the run's "
        "set-up (epoch 0's scores, the reference's measurements).",
        "",
        "| precision | status | epochs | epoch seconds | of which training | audit seconds "
        "| final forget EL10 / MA | audit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        after = [r for r in run["rows"] if r["epoch"] == run["epochs"]]
        el = sum(r["el_10"] for r in after) / len(after) if after else None
        ma = sum(r["ma"] for r in after) / len(after) if after else None
        summary = (run["audit"] or {}).get("summary") or (run["audit"] or {}).get("skipped")
        lines.append(
            f"| {name} | {run['status']} | {run['epochs']} | {run['epoch_seconds']} | "
            f"{run['train_seconds']} | {run['audit_seconds']} | {_fmt(el)} / {_fmt(ma)} | "
            f"{summary} |"
        )
    ratio, audit_ratio = comparison["time_ratio"], comparison["audit_time_ratio"]
    lines += [
        "",
        f"Time ratio fp32 / bf16: epochs {_fmt(ratio, 2)}x, audit {_fmt(audit_ratio, 2)}x.",
        "",
        "## Per sequence",
        "",
        "| id | first done epoch fp32 | bf16 | final decision fp32 | bf16 | final EL10 fp32 "
        "| bf16 | final MA fp32 | bf16 | audit verdict fp32 | bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    first = {name: _first_done(run["rows"]) for name, run in runs.items()}
    last = {
        name: {r["id"]: r for r in run["rows"] if r["epoch"] == run["epochs"]}
        for name, run in runs.items()
    }
    verdict = {
        name: {s["id"]: s["verdict"] for s in run["audit_sequences"]} for name, run in runs.items()
    }
    for i in sorted(set(last["fp32"]) | set(last["bf16"])):
        a, b = last["fp32"].get(i, {}), last["bf16"].get(i, {})
        lines.append(
            f"| {i} | {first['fp32'].get(i)} | {first['bf16'].get(i)} | {a.get('done')} | "
            f"{b.get('done')} | {_fmt(a.get('el_10'))} | {_fmt(b.get('el_10'))} | "
            f"{_fmt(a.get('ma'))} | {_fmt(b.get('ma'))} | {verdict['fp32'].get(i)} | "
            f"{verdict['bf16'].get(i)} |"
        )
    differ = comparison["decisions_differ"]
    lines += [
        "",
        f"Decisions (done, stands out, trains next) compared at {comparison['decisions_compared']} "
        f"(epoch, sequence) pairs both runs reached: {len(differ)} differ.",
    ]
    lines += [
        f"- epoch {d['epoch']}, {d['id']}: fp32 {d['fp32']}, bf16 {d['bf16']}" for d in differ
    ]
    verdicts = comparison["verdicts_differ"]
    lines += ["", f"Audit verdicts that differ: {len(verdicts) or 'none'}."]
    lines += [f"- {v['id']}: fp32 {v['fp32']}, bf16 {v['bf16']}" for v in verdicts]
    atomic_write_text(results / "bf16_demo.md", "\n".join(lines) + "\n")
    atomic_write_json(
        results / "bf16_demo.json",
        {"machine": machine, "comparison": comparison}
        | {name: {k: v for k, v in run.items() if k != "rows"} for name, run in runs.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", required=True, help="the demo's planted model folder")
    parser.add_argument("--out", default="runs/bf16-demo", help="both runs; kept to resume")
    parser.add_argument("--data-dir", default=None, help="offline data mirror")
    parser.add_argument(
        "--results", default=str(ROOT / "benchmarks" / "results"), help="where the .md goes"
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    forget = _forget_spec(DemoSettings(data_dir=args.data_dir))
    runs = {p: _measured(_run(p, args.planted, forget, out, args.data_dir)) for p in PRECISIONS}
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
    }
    comparison = compare(runs["fp32"], runs["bf16"])
    write_results(runs, comparison, args, machine, Path(args.results))


if __name__ == "__main__":
    main()
