"""Peak memory of a LoRA ICU run against a full ICU run on the packaged SmolLM2-135M.

Each run is its own process (peak RSS is per process): one epoch of ICU over
lm-extraction:8_0 in micro-batches of 4, the configs/smollm2-cpu.yaml setting
otherwise. The stopping thresholds are set to 0 so the base model, which never
memorized these sequences, is not refused as "already forgotten": this measures
memory and time, not forgetting. Both runs embed the same 2,000-row pool subset and
load the same BERTScore encoder, so the difference is the model's: full fine-tuning
holds weights, a frozen copy for L_kl, gradients and two Adam moments; LoRA holds the
weights once plus the adapters' gradients and moments.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/lora_memory.py
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = [
    "model=smollm2-135m",
    "forget=lm-extraction:8_0",
    "method=icu",
    "lr=1e-4",
    "batch_size=8",
    "grad_accum=2",
    "max_epochs=1",
    "analogous.pool_limit=2000",
    "stop.el_max=0",
    "stop.ma_max=0",
]
RUNS = {
    "full": [],
    "lora": ["lora.r=8", "lora.alpha=16"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lora-memory-"))
    rows = {}
    for name, extra in RUNS.items():
        out = root / name
        sets = [x for s in [*SETTINGS, *extra, f"out={out}"] for x in ("--set", s)]
        cmd = [sys.executable, "-m", "icu_unlearn", "run", *sets]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            sys.exit(f"{name} run failed:\n{proc.stderr[-2000:]}")
        manifest = json.loads((out / "manifest.json").read_text())
        epoch = json.loads((out / "epochs.jsonl").read_text().splitlines()[0])
        rows[name] = {
            "peak_rss_mb": manifest["peak_rss_mb"],
            "parameters": manifest["parameters"],
            "reference": manifest["reference"]["kind"],
            "train_seconds": epoch["train_seconds"],
            "epoch_seconds": epoch["seconds"],
        }
        print(name, rows[name], flush=True)
    ratio = rows["lora"]["peak_rss_mb"] / rows["full"]["peak_rss_mb"]
    result = {
        "settings": SETTINGS,
        "runs": rows,
        "lora_over_full_peak_rss": round(ratio, 3),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lora_memory.py",
    }
    results = Path(args.results)
    (results / "lora_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# LoRA vs full ICU: peak memory (SmolLM2-135M, one epoch, 8 samples)",
        "",
        f"`{result['command']}`",
        "",
        "| run | peak RSS (MB) | trainable / total parameters | reference model | "
        "train s | epoch s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        p = r["parameters"]
        lines.append(
            f"| {name} | {r['peak_rss_mb']:.0f} | {p['trainable']:,} / {p['total']:,} "
            f"({p['trainable'] / p['total']:.2%}) | {r['reference']} | "
            f"{r['train_seconds']:.1f} | {r['epoch_seconds']:.1f} |"
        )
    lines += ["", f"LoRA / full peak RSS: {ratio:.3f}", ""]
    (results / "lora_memory.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
