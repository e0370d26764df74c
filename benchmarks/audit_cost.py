"""What the default audit of a 32-sequence result costs: from a cold cache (the reference
model measured) and with the reference's measurements cached (a second audit, or the
audit after a run that measured them), in one invocation, each in a child process of its
own so that its wall time and peak RSS are its own.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/audit_cost.py \
        --model runs/lm32/icu-reference/model

The default audit: greedy EL/MA and the exact extraction probability, membership against
the holdout, the reference beside the model; no sampling or beam attack (`--attack`).
`--precision bf16` audits on bfloat16 weights. Writes benchmarks/results/audit_cost.md
and .json (audit_cost_bf16.* for bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _audit(args, cache: Path, out: Path) -> dict:
    command = [
        sys.executable, "-m", "icu_unlearn", "audit", "--model", args.model,
        "--forget", args.forget, "--holdout", args.holdout, "--reference", args.reference,
        "--el-window", "--precision", args.precision, "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "ICU_CACHE_DIR": str(cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 3):  # 3: the audit ran and found a record leaked
        sys.exit(f"audit failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    audit = json.loads((out / "audit.json").read_text())
    return {
        "wall_seconds": round(wall, 1),
        # the largest child so far (Linux: KiB); the cold audit runs first
        "peak_rss_mb": round(max(peak, before) / 1024),
        "verdicts": audit["aggregates"]["verdicts"],
        "stands_out": audit["aggregates"]["stands_out"],
        "command": " ".join(command[3:]),  # after `python -m icu_unlearn`
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the unlearned model folder")
    parser.add_argument("--forget", default="lm-extraction:32_0")
    parser.add_argument("--holdout", default="lm-extraction:32_2")
    parser.add_argument("--reference", default="smollm2-135m")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="the audits' (bf16 writes audit_cost_bf16.md and .json; OMP_NUM_THREADS=2 "
        "adds _2threads)",
    )
    args = parser.parse_args()
    # the audits' torch threads: OMP_NUM_THREADS as given (1 beside another job, 2 alone)
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    name = "audit_cost" + ("" if args.precision == "fp32" else f"_{args.precision}")
    name += "" if threads == 1 else f"_{threads}threads"
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"  # empty: the cold audit measures the reference
        cold = _audit(args, cache, Path(tmp) / "cold")
        cached = _audit(args, cache, Path(tmp) / "cached")
    same = cold["verdicts"] == cached["verdicts"] and cold["stands_out"] == cached["stands_out"]
    results = {"cold": cold, "cached": cached, "same_result": same}
    out = Path(args.results)
    (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# The default audit of a 32-sequence result: cold cache and cached reference"
        + ("" if args.precision == "fp32" else f", in {args.precision}"),
        "",
        f"Command: `OMP_NUM_THREADS={threads} ICU_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/audit_cost.py {' '.join(sys.argv[1:])}`  ",
        f"Each audit: `icu-unlearn {cold['command']}` (the output folder a temporary one)  ",
        f"Machine: {platform.machine()}, {os.cpu_count()}-core CPU, "
        f"{threads} thread{'s' if threads > 1 else ''}; {time.strftime('%Y-%m-%d')}",
        "",
        "| audit | wall s | peak RSS MB (largest so far) | verdicts | stands out |",
        "|---|---|---|---|---|",
    ]
    for label, r in (("cold cache", cold), ("reference cached", cached)):
        v = r["verdicts"]
        lines.append(
            f"| {label} | {r['wall_seconds']} | {r['peak_rss_mb']} | {v['leaked']} leaked / "
            f"{v['as_reference']} as reference / {v['not_extractable']} not extractable | "
            f"{r['stands_out']} |"
        )
    lines += [
        "",
        f"cached / cold wall time {cached['wall_seconds'] / cold['wall_seconds']:.2f}; "
        f"same verdicts: {'yes' if same else 'NO'}",
    ]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
