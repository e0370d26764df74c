"""Fast EL/MA path vs the reference per-prefix `generate` loop, same model, data and machine.

    ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_memorization.py

Writes benchmarks/results/bench_memorization.{json,md}. The fast path decodes only where the
model's greedy token departs from the text, so its lead grows with memorization; for a model
that has memorized the samples (the case unlearning starts from), plant them first and pass
that model, e.g. `--model runs/cpu32/planted --name bench_memorization_planted` (the
planted model `benchmarks/cpu_protocol.py` writes).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from icu_unlearn.data.forget import load_forget_set
from icu_unlearn.metrics.memorization import (
    _decoding_plan,
    memorization_pass,
    memorization_scores,
    memorization_scores_literal,
)
from icu_unlearn.models import load_model_and_tokenizer


def token_forwards(model, seqs, t0s, pad, n):
    """Tokens each path runs through the model, counted from the fast path's own plan.

    The reference runs T - 1 tokens for every prefix length p = 1..T-1 (p prefilled,
    T - p - 1 decoded); the fast path runs the sequence twice (argmax pass, cache pass)
    and decodes T - q - 1 tokens from every mismatch position q its plan needs. Padding
    is not counted for either. The ratio of these counts is the part of the speed-up
    that comes from doing less; the rest is tokens per second.
    """
    hits = memorization_pass(model, seqs, t0s, pad, batch_size=8).hits
    reference = sum((len(s) - 1) ** 2 for s in seqs)
    fast = 0
    for b, (seq, t0) in enumerate(zip(seqs, t0s, strict=True)):
        _, positions = _decoding_plan(seq, hits[b], t0, n, window=False)
        fast += 2 * len(seq) + sum(len(seq) - q - 1 for q in positions)
    return fast, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--forget", default="lm-extraction:32_0")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--el-n", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="bench_memorization", help="result file stem")
    args = parser.parse_args()

    model, tokenizer = load_model_and_tokenizer(args.model)
    samples = load_forget_set(args.forget, tokenizer)[: args.samples]
    seqs = [s.input_ids for s in samples]
    t0s = [s.prefix_length for s in samples]
    pad = tokenizer.pad_token_id

    start = time.perf_counter()
    fast = memorization_scores(model, seqs, t0s, pad, n=args.el_n)
    fast_s = time.perf_counter() - start
    print(f"fast path: {fast_s:.1f} s", flush=True)
    start = time.perf_counter()
    ref = memorization_scores_literal(model, seqs, t0s, pad, n=args.el_n)
    ref_s = time.perf_counter() - start
    print(f"reference: {ref_s:.1f} s", flush=True)

    fast_tokens, reference_tokens = token_forwards(model, seqs, t0s, pad, args.el_n)

    d_el = [
        abs(a - b)
        for a, b in zip(fast.extraction_likelihood, ref.extraction_likelihood, strict=False)
    ]
    d_ma = [
        abs(a - b)
        for a, b in zip(fast.memorization_accuracy, ref.memorization_accuracy, strict=False)
    ]
    mismatch = sum(
        (1 - m) * (len(s) - 1) for m, s in zip(ref.memorization_accuracy, seqs, strict=False)
    )
    result = {
        "model": args.model,
        "forget": args.forget,
        "samples": len(seqs),
        "tokens_per_sample": [len(s) for s in seqs],
        "el_n": args.el_n,
        "mismatch_share": mismatch / sum(len(s) - 1 for s in seqs),
        "fast_seconds": round(fast_s, 2),
        "reference_seconds": round(ref_s, 2),
        "speedup": round(ref_s / fast_s, 2),
        "fast_token_forwards": fast_tokens,
        "reference_token_forwards": reference_tokens,
        "work_ratio": round(reference_tokens / fast_tokens, 2),
        "fast_tokens_per_second": round(fast_tokens / fast_s, 1),
        "reference_tokens_per_second": round(reference_tokens / ref_s, 1),
        "max_abs_delta_el": max(d_el),
        "mean_abs_delta_el": sum(d_el) / len(d_el),
        "max_abs_delta_ma": max(d_ma),
        "mean_abs_delta_ma": sum(d_ma) / len(d_ma),
        "same_generations": sum(
            f == r for f, r in zip(fast.generations, ref.generations, strict=False)
        ),
        "mean_el_fast": sum(fast.extraction_likelihood) / len(seqs),
        "mean_ma_fast": sum(fast.memorization_accuracy) / len(seqs),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.processor() or platform.platform()}",
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "command": "ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_memorization.py "
        + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# EL/MA: fast path vs reference per-prefix generate loop", ""]
    lines += [f"| {k} | {v} |" for k, v in result.items() if k != "tokens_per_sample"]
    lines.insert(2, "| key | value |")
    lines.insert(3, "| --- | --- |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
