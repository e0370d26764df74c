"""Peak memory of training steps of ICU and LLMU: the library's suffix-only, chunked losses
against the full-logit reference they replaced (tests/loss_reference.py), same model,
batches and machine.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loss_memory.py

Each (subject, method, path) is its own process, since peak RSS (`ru_maxrss`) is per
process and never goes down; torch's CPU allocations are invisible to tracemalloc. A
process builds the model, a frozen copy (the reference model), Adam and random batches
of 50 + 50 tokens (the paper's shape; memory does not depend on the token values), then
runs two optimizer steps, so the second runs with Adam's moments already allocated, as
every step of a run but the first does. Subjects: a tiny Llama with SmolLM2's 49,152-token
vocabulary (the logits dominate, so the losses' share is plain) and the packaged
SmolLM2-135M itself. Writes benchmarks/results/bench_loss_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = ("tiny-49k", "smollm2-135m")
METHODS = ("icu", "llmu")
# "library+checkpointing" is the library's losses with transformers' activation checkpointing
# (one decoder layer's activations at a time): what the losses cannot reach is the layers'
# activations, which this row shows.
PATHS = ("reference", "library", "library+checkpointing")
BATCH, PREFIX, SUFFIX = 8, 50, 50


def _rss_mb() -> float:
    """Resident set size now, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _model(subject: str):
    if subject == "smollm2-135m":
        from icu_unlearn.models import load_model_and_tokenizer

        return load_model_and_tokenizer("smollm2-135m")[0]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config)


def _batches(vocab: int):
    import torch

    from icu_unlearn.methods.base import MISMATCH, PAIRS, Batch

    generator = torch.Generator().manual_seed(0)

    def batch():
        ids = torch.randint(0, vocab, (BATCH, PREFIX + SUFFIX), generator=generator)
        return Batch(ids, torch.ones_like(ids), torch.full((BATCH,), PREFIX))

    return {"forget": batch(), PAIRS: batch(), MISMATCH: batch()}


def child(subject: str, method: str, path: str) -> dict:
    """Two optimizer steps of `method` with the `path` losses; memory and time."""
    import torch

    from icu_unlearn.config import load_config
    from icu_unlearn.methods import METHODS as REGISTRY

    sys.path.insert(0, str(ROOT))
    from tests.loss_reference import method_loss

    model = _model(subject)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    model.train()
    if path == "library+checkpointing":
        model.activation_checkpointing_enable({"use_reentrant": False})
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-6)
    batches = _batches(model.config.vocab_size)
    config = load_config(None, [f"method={method}"])
    setup_rss, setup_peak = _rss_mb(), _peak_mb()
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if path.startswith("library"):
            loss, _ = REGISTRY[method].loss(model, reference, batches, config)
        else:
            loss = method_loss(method, model, reference, batches, config)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return {
        "subject": subject,
        "method": method,
        "path": path,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "setup_rss_mb": round(setup_rss),
        "setup_peak_mb": round(setup_peak),
        "peak_mb": round(_peak_mb()),
        "step_seconds": [round(s, 2) for s in seconds],
        "loss": loss.item(),
    }


def _torch_version() -> str:
    import torch

    return torch.__version__


def _markdown(rows: list[dict], note: str) -> str:
    lines = [
        "# Peak memory of ICU and LLMU steps: suffix-only chunked losses vs full logits",
        "",
        note,
        "",
        "| subject | method | path | setup RSS MB | peak RSS MB | peak - setup MB | step 2 s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['subject']} | {r['method']} | {r['path']} | {r['setup_rss_mb']} | "
            f"{r['peak_mb']} | {r['peak_mb'] - r['setup_rss_mb']} | {r['step_seconds'][1]} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", nargs="+", default=list(SUBJECTS), choices=SUBJECTS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--child", nargs=3, metavar=("SUBJECT", "METHOD", "PATH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    rows = []
    load_before = os.getloadavg()[0]
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for subject in args.subjects:
        for method in args.methods:
            for path in PATHS:
                cmd = [sys.executable, __file__, "--child", subject, method, path]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
                if proc.returncode != 0:
                    sys.exit(f"{subject} {method} {path} failed:\n{proc.stderr[-3000:]}")
                rows.append(json.loads(proc.stdout.splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    note = (
        f"Batch {BATCH} of {PREFIX} + {SUFFIX} tokens (forget, pairs and for LLMU mismatch "
        "batches), a frozen reference copy, Adam, two steps; each row its own process. "
        f"Measured {date.today()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, torch {_torch_version()} CPU; 1-minute "
        f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        "(other work shares the machine, so the times are noisy; identical SmolLM2 ICU runs "
        "peaked within about 250 MB of each other). Command: "
        "`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loss_memory.py`."
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_loss_memory.json").write_text(
        json.dumps({"note": note, "rows": rows}, indent=1) + "\n"
    )
    (out / "bench_loss_memory.md").write_text(_markdown(rows, note))


if __name__ == "__main__":
    main()
