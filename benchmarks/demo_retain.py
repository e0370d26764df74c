"""The demo's ICU run (`demo.icu_settings`) with its kept sequences only watched before and
after ("watched", the demo until 2026-12-07) and held by the retain term every epoch
("held", `probe.retain`, the demo's run now), from one planted model: time, epochs, the
per-sequence decisions of every epoch, the end-of-run audits, and each kept record's
EL_10 and MA after.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/demo_retain.py \
        --planted runs/demo/planted --out runs/demo-retain

Both runs take the demo's default settings (precision auto) and differ only in
`probe.retain`, on the same machine and thread count. A finished run is kept in --out and
a killed one resumes from its newest checkpoint (its time is then the sum of its epochs',
not its wall time). Writes benchmarks/results/demo_retain.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from icu_unlearn import load_config
from icu_unlearn.data.forget import load_forget_set
from icu_unlearn.demo import DemoSettings, halves, icu_settings, ids_spec
from icu_unlearn.evaluate import EvalSettings, evaluate
from icu_unlearn.io import atomic_write_json, atomic_write_text
from icu_unlearn.models import load_model_and_tokenizer
from icu_unlearn.precision import resolve
from icu_unlearn.train import finish_run

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("watched", "held")


def _halves(settings: DemoSettings) -> tuple[str, str]:
    """The demo's forget and keep specs: the planted sequences' first and second halves."""
    _, tokenizer = load_model_and_tokenizer(settings.model)
    ids = [s.id for s in load_forget_set(settings.plant, tokenizer, 50, settings.data_dir)]
    return tuple(ids_spec(h) for h in halves(ids, settings.forget_count))


def _run(arm: str, settings: DemoSettings, planted: str, forget: str, keep: str, out: Path):
    run_dir = out / arm
    held = keep if arm == "held" else None
    finish_run(load_config(None, icu_settings(settings, planted, forget, run_dir, keep=held)))
    return run_dir


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _measure(run_dir: Path, keep: str, settings: DemoSettings) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    epochs = _lines(run_dir / "epochs.jsonl")
    kept = evaluate(
        str(run_dir / "model"),
        keep,
        settings=EvalSettings(precision=resolve(settings.precision)),
        data_dir=settings.data_dir,
    ).samples
    return {
        "status": manifest["status"],
        "epochs": manifest["epochs"],
        "epoch_seconds": [e["seconds"] for e in epochs],
        "train_seconds": [e["train_seconds"] for e in epochs],
        "probe_seconds": [e["probe_seconds"] for e in epochs],
        "done": [e.get("done") for e in epochs],
        "decisions": [
            {r["id"]: r.get("done") for r in _lines(run_dir / "samples.jsonl") if r["epoch"] == e}
            for e in range(1, manifest["epochs"] + 1)
        ],
        "audit": manifest["audit"]["summary"],
        "stands_out": manifest["audit"].get("stands_out"),
        "forget_after": {k: manifest["after"][k] for k in ("el_10", "ma")},
        "kept_after": {r["id"]: {"el_10": r["el_10"], "ma": r["ma"]} for r in kept},
    }


def _table(results: dict, planted_kept: dict) -> list[str]:
    lines = [
        "| arm | status | epochs | seconds (epochs' sum) | train s / epoch | probe s / epoch "
        "| done per epoch | audit | stands out | kept EL_10 after (mean) | kept MA after (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in results.items():
        kept = r["kept_after"].values()
        n = len(r["epoch_seconds"])
        lines.append(
            f"| {arm} | {r['status']} | {r['epochs']} | {sum(r['epoch_seconds']):.0f} "
            f"| {sum(r['train_seconds']) / n:.1f} | {sum(r['probe_seconds']) / n:.1f} "
            f"| {', '.join(str(d) for d in r['done'])} | {r['audit']} | {r['stands_out']} "
            f"| {sum(k['el_10'] for k in kept) / len(kept):.3f} "
            f"| {sum(k['ma'] for k in kept) / len(kept):.3f} |"
        )
    ids = list(planted_kept)
    lines += ["", "| kept record | planted EL_10 / MA | " + " | ".join(results) + " |"]
    lines.append("|---|---|" + "---|" * len(results))
    for i in ids:
        cells = [f"{r['kept_after'][i]['el_10']:.3f} / {r['kept_after'][i]['ma']:.3f}" for r in
                 results.values()]  # fmt: skip
        before = planted_kept[i]
        lines.append(
            f"| {i} | {before['el_10']:.3f} / {before['ma']:.3f} | " + " | ".join(cells) + " |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", required=True, help="the demo's planted model")
    parser.add_argument("--out", required=True, help="where the two runs go")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    settings = DemoSettings(data_dir=args.data_dir, progress=False)
    forget, keep = _halves(settings)
    out = Path(args.out)
    results = {}
    for arm in ARMS:
        run_dir = _run(arm, settings, args.planted, forget, keep, out)
        results[arm] = _measure(run_dir, keep, settings)
    planted = evaluate(
        args.planted,
        keep,
        settings=EvalSettings(precision=resolve(settings.precision)),
        data_dir=settings.data_dir,
    ).samples
    planted_kept = {r["id"]: {"el_10": r["el_10"], "ma": r["ma"]} for r in planted}
    same = results["watched"]["decisions"] == results["held"]["decisions"]
    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    lines = [
        "# The demo's kept records: watched before and after, or held every epoch",
        "",
        "Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/demo_retain.py --planted {args.planted} --out {args.out}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {threads} thread(s); "
        f"precision {resolve(settings.precision)} (the demo's auto). Forget {forget}; keep "
        f"{keep}. `held` adds `probe.retain` (the retain term, weight "
        f"{load_config(None, []).probe.retain_weight}, and the per-epoch watch).",
        "",
        *_table(results, planted_kept),
        "",
        f"Every per-sequence decision of every epoch the same in both: {'yes' if same else 'NO'}",
    ]
    path = Path(args.results)
    atomic_write_json(path / "demo_retain.json", results | {"planted_kept": planted_kept})
    atomic_write_text(path / "demo_retain.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
