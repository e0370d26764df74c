"""What an unlearning run spends its time and memory on: the lazy EL schedule (the
default) against the full one (`log.el_every_epoch: true`) and against decoding every
continuation afresh (`eval.verify: false`, "plain"), in one invocation.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_run.py \
        --demo-planted runs/demo/planted --planted32 runs/cpu_protocol/planted
    # verification against plain decoding only, its own results file
    ... benchmarks/bench_run.py --planted32 runs/lm32/planted/model --schedules lazy,plain \
        --name bench_verify

Subjects: the demo's ICU run (its planted model, its settings) and ICU on the 32 planted
sequences of the CPU protocol (`benchmarks/cpu_protocol.py` plants them). Each run is a
child process of its own, so that its peak RSS is its own. Per epoch: training, MA (one
teacher-forced pass), EL with the greedy generation (decoding), the IUR check, probes.
A finished run is kept in the results file; a rerun measures only what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPLIT = ("train_seconds", "ma_seconds", "el_seconds", "check_seconds", "probe_seconds")
SCHEDULES = {
    "lazy": ["log.el_every_epoch=false"],  # the default: verified continuations
    "full": ["log.el_every_epoch=true"],
    "plain": ["log.el_every_epoch=false", "eval.verify=false"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--demo-planted", help="the demo's planted model folder (runs/demo/planted)"
    )
    parser.add_argument("--planted32", help="the CPU protocol's planted model folder")
    parser.add_argument("--forget32", default="lm-extraction:32_0")
    parser.add_argument("--reference", default="smollm2-135m", help="never-planted model")
    parser.add_argument(
        "--max-epochs32", type=int, default=30, help="epoch budget of the 32-sequence runs"
    )
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_run"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--schedules", default="lazy,full", help="of " + ",".join(SCHEDULES))
    parser.add_argument("--name", default="bench_run", help="results file name, no suffix")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    results_path = Path(args.results) / f"{args.name}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    subjects = {}
    if args.demo_planted:
        subjects["demo"] = _demo_settings(args.demo_planted, Path(args.out) / "demo")
    if args.planted32:
        subjects["planted32"] = [
            f"model={args.planted32}",
            f"forget={args.forget32}",
            "lr=1e-4",
            "batch_size=8",
            f"max_epochs={args.max_epochs32}",
            f"stop.reference={args.reference}",
            "analogous.pool_limit=2000",
            "audit.enabled=false",
        ]
    if not subjects:
        parser.error("give --demo-planted and/or --planted32")
    for subject, settings in subjects.items():
        for schedule in args.schedules.split(","):
            key = f"{subject}/{schedule}"
            if key in results:
                print(f"{key}: measured earlier")
                continue
            out = Path(args.out) / subject / schedule
            overrides = [*settings, f"out={out}", *SCHEDULES[schedule]]
            proc = subprocess.run(
                [sys.executable, __file__, "--child", *overrides], capture_output=True, text=True
            )
            if proc.returncode != 0:
                sys.exit(f"{key} failed:\n{proc.stderr[-3000:]}")
            results[key] = json.loads(proc.stdout.strip().splitlines()[-1])
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            print(f"{key}: {_line(results[key])}", flush=True)
    (Path(args.results) / f"{args.name}.md").write_text(_table(results, sys.argv[1:]))
    print(_table(results, sys.argv[1:]))


def _demo_settings(planted: str, out: Path) -> list[str]:
    from icu_unlearn.data.forget import load_forget_set
    from icu_unlearn.demo import DemoSettings, halves, icu_settings, ids_spec
    from icu_unlearn.models import load_model_and_tokenizer

    settings = DemoSettings()
    report = json.loads((Path(planted) / "memorize.json").read_text())
    _, tokenizer = load_model_and_tokenizer(planted)
    ids = [s.id for s in load_forget_set(report["forget"], tokenizer)]
    # the demo's forget half, and its kept half, held
    forget, keep = (ids_spec(h) for h in halves(ids, None))
    sets = icu_settings(settings, planted, forget, out, keep=keep)
    sets = [s for s in sets if not s.startswith("out=")]
    return [*sets, "audit.enabled=false"]  # the epochs are measured here, not the audit


def _child(overrides: list[str]) -> None:
    """One run, in this process; its epochs' time split and its peak RSS as one JSON line."""
    from icu_unlearn import load_config, unlearn

    started = time.perf_counter()
    config = load_config(None, overrides)
    result = unlearn(config, overwrite=True, progress=False)
    epochs = [e for e in result.epochs if "diverged" not in e]
    totals = {k: sum(e.get(k, 0.0) for e in epochs) for k in (*SPLIT, "seconds")}
    print(
        json.dumps(
            {
                "status": result.status,
                "epochs": len(epochs),
                "el_scored": [e.get("el_scored") for e in epochs],
                "totals": {k: round(v, 1) for k, v in totals.items()},
                "evaluation_share": round(1 - totals["train_seconds"] / totals["seconds"], 3),
                "wall_seconds": round(time.perf_counter() - started, 1),
                # Linux reports ru_maxrss in KiB
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "weights_sha256": hashlib.sha256(
                    (result.model_dir / "model.safetensors").read_bytes()
                ).hexdigest(),
            }
        )
    )


def _line(r: dict) -> str:
    t = r["totals"]
    return (
        f"{r['status']} after {r['epochs']} epochs, {t['seconds']:.0f} s in epochs "
        f"(training {t['train_seconds']:.0f}, MA {t['ma_seconds']:.0f}, EL {t['el_seconds']:.0f}, "
        f"IUR {t['check_seconds']:.0f}, probes {t['probe_seconds']:.0f}); evaluation "
        f"{r['evaluation_share']:.0%} of epoch time; peak RSS {r['peak_rss_mb']} MB"
    )


def _table(results: dict, argv: list[str]) -> str:
    lines = [
        "# One ICU run's time and memory: lazy EL (verified continuations) against the full "
        "schedule and against plain decoding\n",
        f"Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/bench_run.py {' '.join(argv)}`  ",
        f"Machine: {platform.machine()}, {platform.system()}, {platform.processor() or 'CPU'}, "
        f"CPU only, one thread a run; {time.strftime('%Y-%m-%d')}\n",
        "| subject | schedule | status | epochs | epoch s | training | MA | EL + generation "
        "| IUR | probes | evaluation share | peak RSS MB | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        subject, schedule = key.split("/")
        t = r["totals"]
        lines.append(
            f"| {subject} | {schedule} | {r['status']} | {r['epochs']} | {t['seconds']:.0f} | "
            + " | ".join(f"{t[k]:.0f}" for k in SPLIT)
            + f" | {r['evaluation_share']:.0%} | {r['peak_rss_mb']} | {r['wall_seconds']:.0f} |"
        )
    lines.append("")
    for subject in sorted({k.split("/")[0] for k in results}):
        lazy = results.get(f"{subject}/lazy")
        for other_name in ("full", "plain"):
            other = results.get(f"{subject}/{other_name}")
            if not (lazy and other):
                continue
            same = lazy["epochs"] == other["epochs"] and lazy["status"] == other["status"]
            same_weights = lazy["weights_sha256"] == other["weights_sha256"]
            lt, ot = lazy["totals"], other["totals"]
            lines.append(
                f"- {subject}: lazy / {other_name} epoch time {lt['seconds'] / ot['seconds']:.2f}, "
                f"EL time {lt['el_seconds'] / max(ot['el_seconds'], 1e-9):.2f}, "
                f"peak RSS {lazy['peak_rss_mb'] / other['peak_rss_mb']:.2f}; "
                f"same status and epochs: {'yes' if same else 'NO'}; "
                f"bit-identical final weights: {'yes' if same_weights else 'no'}"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
