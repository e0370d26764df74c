"""EL / MA scoring in fp32, in bf16 under autocast alone (float32 weights cast again at every
pass: how `precision: bf16` scored before), and in bf16 on weights cast once
(`precision.inference`), on one model in one process, repeated, with how far each bf16
result lands from fp32's.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python \\
        benchmarks/bench_bf16_scoring.py --model runs/lm32/icu-reference/model

`--model`: a model part way through unlearning (its forget set partly forgotten, so that
EL decodes many rows). Writes benchmarks/results/bench_bf16_scoring.md and .json.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from icu_unlearn.data.forget import load_forget_set
from icu_unlearn.io import atomic_write_json, atomic_write_text
from icu_unlearn.metrics.memorization import memorization_scores
from icu_unlearn.models import load_model_and_tokenizer
from icu_unlearn.precision import autocast

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("fp32", "bf16 autocast only", "bf16 weights cast once")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--forget", default="lm-extraction:32_0")
    parser.add_argument("--count", type=int, default=16, help="forget sequences scored")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer = load_model_and_tokenizer(args.model)
    samples = load_forget_set(args.forget, tokenizer)[: args.count]
    seqs = [s.input_ids for s in samples]
    t0s = [s.prefix_length for s in samples]

    def score(way: str):
        """EL_10 over p >= t0 and MA, as a run scores them: batches of 8 sequences."""
        precision = "bf16" if way == "bf16 weights cast once" else "fp32"
        outer = autocast("bf16" if way == "bf16 autocast only" else "fp32", "cpu")
        started = time.perf_counter()
        el, ma = [], []
        with outer:
            for k in range(0, len(seqs), 8):
                s = memorization_scores(
                    model, seqs[k : k + 8], t0s[k : k + 8], tokenizer.pad_token_id,
                    n=10, window=True, batch_size=8, precision=precision,
                )  # fmt: skip
                el += s.extraction_likelihood
                ma += s.memorization_accuracy
        return time.perf_counter() - started, el, ma

    seconds: dict[str, list[float]] = {w: [] for w in WAYS}
    scores = {}
    for _ in range(args.repeats):  # interleaved, so that load on the machine hits each alike
        for way in WAYS:
            took, el, ma = score(way)
            seconds[way].append(round(took, 2))
            scores[way] = {"el": el, "ma": ma}
    median = {w: statistics.median(s) for w, s in seconds.items()}
    result = {
        "model": args.model,
        "forget": args.forget,
        "count": len(seqs),
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "ratio_to_fp32": {w: round(median["fp32"] / median[w], 2) for w in WAYS},
        "scores": scores,
    }
    for way in WAYS[1:]:
        diff = {
            k: max(abs(a - b) for a, b in zip(scores[way][k], scores["fp32"][k], strict=True))
            for k in ("el", "ma")
        }
        result[f"max_difference_{way}"] = diff
    atomic_write_json(ROOT / "benchmarks" / "results" / "bench_bf16_scoring.json", result)
    lines = [
        "# EL / MA scoring: fp32, bf16 under autocast only, bf16 on weights cast once",
        "",
        "Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/bench_bf16_scoring.py --model {args.model} --count {args.count}`  ",
        f"Machine: {platform.machine()}, {platform.system()}, CPU, {torch.get_num_threads()} "
        f"thread(s); {len(seqs)} sequences of {args.forget}, EL_10 over p >= t0 and MA, "
        f"batches of 8 as a run scores; {args.repeats} interleaved repeats, median.",
        "",
        "| scoring | seconds (each repeat) | fp32 / this | max EL difference | max MA difference |",
        "|---|---|---|---|---|",
    ]
    for way in WAYS:
        diff = result.get(f"max_difference_{way}", {"el": 0.0, "ma": 0.0})
        lines.append(
            f"| {way} | {', '.join(map(str, seconds[way]))} | {result['ratio_to_fp32'][way]} | "
            f"{diff['el']:.4f} | {diff['ma']:.4f} |"
        )
    atomic_write_text(
        ROOT / "benchmarks" / "results" / "bench_bf16_scoring.md", "\n".join(lines) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
