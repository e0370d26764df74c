"""EL's greedy decoding with room reserved in the cache against transformers' growing
cache (a concatenation of the whole cache at every step), in one process, alternating,
on the forgotten records of a 32-sequence result: wall time of each and whether their
scores are equal.

    OMP_NUM_THREADS=2 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/decode_cache.py \
        --model runs/lm32/icu-reference-prefix-rw3/model

Writes benchmarks/results/decode_cache_<N>threads.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from icu_unlearn import scoring
from icu_unlearn.data.forget import load_forget_set
from icu_unlearn.metrics.memorization import memorization_scores
from icu_unlearn.models import load_model_and_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--forget", default="lm-extraction:32_0")
    parser.add_argument("--records", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = parser.parse_args()
    model, tokenizer = load_model_and_tokenizer(args.model)
    samples = load_forget_set(args.forget, tokenizer, 50)[: args.records]
    seqs = [s.input_ids for s in samples]
    reserve = scoring._reserve
    ways = {"reserved": reserve, "growing": lambda cache, room: cache}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    scores = {}
    for _ in range(args.rounds):
        for name, way in ways.items():
            scoring._reserve = way
            started = time.perf_counter()
            scores[name] = memorization_scores(
                model, seqs, [s.prefix_length for s in samples], tokenizer.pad_token_id,
                n=10, window=True, precision=args.precision,
            )  # fmt: skip
            seconds[name].append(round(time.perf_counter() - started, 1))
    scoring._reserve = reserve
    median = {name: statistics.median(v) for name, v in seconds.items()}
    result = {
        "model": args.model, "records": len(seqs), "precision": args.precision,
        "threads": torch.get_num_threads(), "seconds": seconds, "median": median,
        "growing_over_reserved": round(median["growing"] / median["reserved"], 2),
        "equal_scores": scores["reserved"] == scores["growing"],
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }  # fmt: skip
    name = f"decode_cache_{result['threads']}threads"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(
        f"# EL's decoding: room reserved in the cache against transformers' growing cache\n\n"
        f"Command: `OMP_NUM_THREADS={result['threads']} .venv/bin/python "
        f"benchmarks/decode_cache.py --model {args.model} --records {len(seqs)}`  \n"
        f"EL_10 over the window (p >= t0), MA and the generations of {len(seqs)} records of "
        f"{args.forget}, {args.precision}, each way {args.rounds} times, alternating.\n\n"
        "| cache | seconds | median |\n|---|---|---|\n"
        + "".join(f"| {n} | {', '.join(map(str, v))} | {median[n]} |\n" for n, v in seconds.items())
        + f"\ngrowing / reserved: {result['growing_over_reserved']}; "
        f"scores equal: {'yes' if result['equal_scores'] else 'NO'}\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
