"""One Adam step over SmolLM2-135M's parameters: torch's fused kernel (what the training
loops use on CPU and CUDA, `icu_unlearn.optim.adam`) against the single-tensor step they
used before, in one process, alternating.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/adam_step.py

Writes benchmarks/results/adam_step_<N>threads.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from icu_unlearn.models import load_model_and_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"


def _seconds(optimizer, params, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        started = time.perf_counter()
        optimizer.step()
        out.append(round(time.perf_counter() - started, 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    model, _ = load_model_and_tokenizer(args.model)
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    ways = {
        "fused": torch.optim.Adam(params, lr=1e-4, fused=True),
        "single-tensor": torch.optim.Adam(params, lr=1e-4, foreach=False),
    }
    for optimizer in ways.values():
        optimizer.step()  # moments allocated outside the timing
    seconds = {name: [] for name in ways}
    for _ in range(2):
        for name, optimizer in ways.items():
            seconds[name] += _seconds(optimizer, params, args.steps)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    threads = torch.get_num_threads()
    result = {
        "model": args.model,
        "parameters": sum(p.numel() for p in params),
        "threads": threads,
        "machine": platform.machine(),
        "seconds": seconds,
        "median": median,
        "single_over_fused": round(median["single-tensor"] / median["fused"], 2),
    }
    name = f"adam_step_{threads}threads"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(
        "# One Adam step over SmolLM2-135M's parameters: fused against single-tensor\n\n"
        f"Command: `OMP_NUM_THREADS={threads} .venv/bin/python benchmarks/adam_step.py`  \n"
        f"{result['parameters']:,} parameters, {2 * args.steps} steps each, alternating in "
        f"blocks of {args.steps}; {platform.machine()}, {threads} threads.\n\n"
        "| step | median s | every step, s |\n|---|---|---|\n"
        + "".join(f"| {n} | {median[n]} | {', '.join(map(str, v))} |\n" for n, v in seconds.items())
        + f"\nsingle-tensor / fused: {result['single_over_fused']}\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
