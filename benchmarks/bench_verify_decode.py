"""EL's decoding with and without verified drafts, on one model, in one process: plain
decoding, drafts that hold (the model's own continuations, as between two epochs where
nothing changed), and stale drafts (continuations of an earlier model), every result
checked equal to plain decoding.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python \
        benchmarks/bench_verify_decode.py --model runs/bench_verify/planted32/lazy/model \
        --earlier runs/lm32/planted/model

`--model`: a model part way through unlearning (its forget set partly forgotten, so that
EL decodes many rows); `--earlier`: the model it started from (its continuations are the
stale drafts). Writes benchmarks/results/bench_verify_decode.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from icu_unlearn.data.forget import load_forget_set
from icu_unlearn.metrics.memorization import memorization_scores
from icu_unlearn.models import load_model_and_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--earlier", required=True)
    parser.add_argument("--forget", default="lm-extraction:32_0")
    parser.add_argument("--count", type=int, default=16, help="forget sequences scored")
    args = parser.parse_args()
    model, tokenizer = load_model_and_tokenizer(args.model)
    earlier, _ = load_model_and_tokenizer(args.earlier)
    samples = load_forget_set(args.forget, tokenizer)[: args.count]
    seqs = [s.input_ids for s in samples]
    t0s = [s.prefix_length for s in samples]

    def score(net, drafts):
        """EL_10 over p >= t0 as a run scores it: batches of 8 sequences."""
        started = time.perf_counter()
        out = []
        for k in range(0, len(seqs), 8):
            out.append(
                memorization_scores(
                    net,
                    seqs[k : k + 8],
                    t0s[k : k + 8],
                    tokenizer.pad_token_id,
                    n=10,
                    window=True,
                    batch_size=8,
                    drafts=None if drafts is None else drafts[k : k + 8],
                )  # fmt: skip
            )
        return time.perf_counter() - started, [g for r in out for g in r.generations]

    plain_s, plain = score(model, None)
    own = [{} for _ in seqs]
    score(model, own)  # fills the drafts with this model's continuations
    holding_s, holding = score(model, own)
    stale = [{} for _ in seqs]
    score(earlier, stale)
    stale_s, from_stale = score(model, stale)
    same = plain == holding == from_stale
    rows = sum(len(d) for d in own)
    lines = [
        "# EL's decoding: plain against verified drafts",
        "",
        f"Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/bench_verify_decode.py {' '.join(sys.argv[1:])}`  ",
        f"Machine: {platform.machine()}, 2-core CPU, torch {torch.__version__}, one thread; "
        f"{time.strftime('%Y-%m-%d')}. {len(seqs)} sequences of {args.forget}, EL_10 over "
        f"p >= t0, {rows} decoding rows (mismatch positions).",
        "",
        "| drafts | seconds | against plain |",
        "|---|---|---|",
        f"| none (plain decoding) | {plain_s:.1f} | 1.00 |",
        f"| the model's own continuations (every draft holds) | {holding_s:.1f} | "
        f"{holding_s / plain_s:.2f} |",
        f"| continuations of --earlier (stale) | {stale_s:.1f} | {stale_s / plain_s:.2f} |",
        "",
        f"Every continuation equal to plain decoding's: {'yes' if same else 'NO'}.",
    ]
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "results" / "bench_verify_decode.md").write_text(text)
    print(text)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
