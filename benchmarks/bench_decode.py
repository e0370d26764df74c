"""The EL fast path's decode step: today's growing cache against a preallocated (static)
cache and `torch.compile`, on SmolLM2-135M, same tokens required.

Each variant decodes `--steps` greedy tokens for R rows after a 50-token prompt, as
`metrics.memorization._decode_from_cache` does (one forward pass per step, the
attention mask grown by one column). Reports milliseconds a step, the ratio to
today's path in the same invocation, whether the tokens are identical, and the share
of a step spent in the weight matrix products (the profiler's aten::mm), which
bounds what any cache or compilation change can save.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_decode.py --rows 4,128 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from functools import partial
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import StaticCache

from icu_unlearn.models import load_model_and_tokenizer

PROMPT = 50
RESULTS = Path(__file__).parent / "results"


def _prompt(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(100, 40000, (rows, PROMPT), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids)


def growing(model, rows: int, steps: int) -> tuple[float, torch.Tensor]:
    """Today's path: a DynamicCache that grows by one position a step."""
    ids, mask = _prompt(rows)
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
    cache, tok, attention = out.cache, out.logits[:, -1].argmax(-1), mask
    tokens = [tok]
    started = time.perf_counter()
    for s in range(steps):
        attention = torch.cat([attention, attention.new_ones(rows, 1)], dim=1)
        out = model(
            input_ids=tok[:, None],
            attention_mask=attention,
            position_ids=torch.full((rows, 1), PROMPT + s),
            cache=cache,
            use_cache=True,
        )
        cache, tok = out.cache, out.logits[:, -1].argmax(-1)
        tokens.append(tok)
    return (time.perf_counter() - started) / steps, torch.stack(tokens, 1)


def static(model, rows: int, steps: int, forward=None) -> tuple[float, torch.Tensor]:
    """A cache preallocated for prompt + steps positions; the mask covers all of them."""
    forward = forward or model
    ids, _ = _prompt(rows)
    cache = StaticCache(config=model.config, max_cache_len=PROMPT + steps)
    attention = torch.zeros(rows, PROMPT + steps, dtype=torch.long)
    attention[:, :PROMPT] = 1
    out = model(
        input_ids=ids, attention_mask=attention[:, :PROMPT], cache=cache, use_cache=True,
        logits_to_keep=1,
    )  # fmt: skip
    tok = out.logits[:, -1].argmax(-1)
    tokens = [tok]
    started = time.perf_counter()
    for s in range(steps):
        attention[:, PROMPT + s] = 1
        out = forward(
            input_ids=tok[:, None],
            attention_mask=attention,
            position_ids=torch.full((rows, 1), PROMPT + s),
            cache=cache,
            use_cache=True,
        )
        tok = out.logits[:, -1].argmax(-1)
        tokens.append(tok)
    return (time.perf_counter() - started) / steps, torch.stack(tokens, 1)


def matmul_share(model, rows: int, steps: int) -> float:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        growing(model, rows, steps)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key == "aten::mm") / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="4,128", help="decoding rows a step, comma-separated")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the median")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the step")
    parser.add_argument("--out", default=str(RESULTS / "bench_decode"))
    args = parser.parse_args()
    model, _ = load_model_and_tokenizer("smollm2-135m")
    model.eval()
    results = []
    with torch.inference_mode():
        for rows in [int(r) for r in args.rows.split(",")]:
            variants = {
                "growing": partial(growing, model, rows, args.steps),
                "static": partial(static, model, rows, args.steps),
            }
            if args.compile:
                compiled = torch.compile(model.forward, dynamic=False)
                started = time.perf_counter()
                static(model, rows, args.steps, compiled)  # compiles
                compile_seconds = time.perf_counter() - started
                variants["static+compile"] = partial(static, model, rows, args.steps, compiled)
            timed = {name: [] for name in variants}
            tokens = {}
            variants["growing"]()  # warm-up
            for _ in range(args.repeats):  # interleaved: a busy machine slows all alike
                for name, run in variants.items():
                    seconds, tokens[name] = run()
                    timed[name].append(seconds)
            median = {name: sorted(t)[len(t) // 2] * 1000 for name, t in timed.items()}
            row = {
                "rows": rows,
                "ms_per_step": median,
                "ratio_to_growing": {n: median[n] / median["growing"] for n in median},
                "same_tokens": {n: bool(torch.equal(tokens[n], tokens["growing"])) for n in tokens},
                "matmul_share": matmul_share(model, rows, min(args.steps, 10)),
            }
            if args.compile:
                row["compile_seconds"] = compile_seconds
            print(json.dumps(row), flush=True)
            results.append(row)
    meta = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_decode.py "
        f"--rows {args.rows} --steps {args.steps} --repeats {args.repeats}"
        + (" --compile" if args.compile else ""),
        "machine": f"{platform.machine()}, {platform.system()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)",
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({**meta, "results": results}, indent=1))
    lines = [
        "# The EL decode step: growing cache, static cache, torch.compile",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}",
        "",
        "| rows | variant | ms a step | / growing | same tokens | matmul share of a step |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, ms in r["ms_per_step"].items():
            lines.append(
                f"| {r['rows']} | {name} | {ms:.1f} | {r['ratio_to_growing'][name]:.2f} | "
                f"{'yes' if r['same_tokens'][name] else 'no'} | {r['matmul_share']:.0%} |"
            )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
