"""The icu-unlearn command line: parse, call the API, print. Bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import UsageError


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="offline data mirror (default: $ICU_DATA_DIR, else the fetch cache)",
    )


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import EvalSettings, evaluate, metric_keys

    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out!r} is a file; give a directory")
    settings = EvalSettings(
        el_n=args.el_n,
        el_window=args.el_window,
        batch_size=args.batch_size,
        bertscore_model=args.bertscore_model,
        bertscore_layers=args.bertscore_layers,
    )
    start = time.perf_counter()
    result = evaluate(
        args.model,
        args.forget,
        settings=settings,
        prefix_length=args.prefix_length,
        data_dir=args.data_dir,
        out=args.out,
        progress=True,
        trust_remote_code=args.trust_remote_code,
    )
    keys = metric_keys(args.el_n)
    rows = [["id", *keys]] + [[r["id"], *(f"{r[k]:.4f}" for k in keys)] for r in result.samples]
    shown = rows if len(rows) <= 21 else rows[:21]
    print(_table(shown))
    if len(rows) > 21:
        print(f"... {len(rows) - 21} more in memorization.jsonl")
    print()
    print(
        _table(
            [
                ["mean", *keys],
                [f"n={len(result.samples)}", *(f"{result.summary[k]:.4f}" for k in keys)],
            ]
        )
    )
    print(f"\n{len(result.samples)} samples in {time.perf_counter() - start:.1f} s", end="")
    print(f"; wrote {args.out}/memorization.jsonl and summary.json" if args.out else "")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import mirror

    if args.action == "fetch":
        fetched = mirror.fetch(args.data_dir)
        print(f"{len(fetched)} files fetched into {mirror.data_dir(args.data_dir)}")
        return 0
    print(f"data directory: {mirror.data_dir(args.data_dir)}")
    rows = [["file", "present", "what"]]
    for entry, present in mirror.status(args.data_dir):
        rows.append([entry.path, "yes" if present else "no", entry.what])
    print(_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icu-unlearn",
        description="Make a causal language model forget specific sequences, and prove it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ev = sub.add_parser("eval", help="memorization metrics per sample (EL, MA, BERTScore, BLEU)")
    ev.add_argument("--model", required=True, help="hub id, local folder, or smollm2-135m")
    ev.add_argument("--forget", required=True, help="forget set: lm-extraction:32_0, ids=..., file")
    ev.add_argument("--out", help="write memorization.jsonl and summary.json here")
    ev.add_argument("--el-n", type=int, default=10, help="n-gram size of EL (default 10)")
    ev.add_argument("--el-window", action="store_true", help="EL over prefix lengths >= t0 only")
    ev.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    ev.add_argument("--prefix-length", type=int, default=50, help="t0 for {id,text} files")
    ev.add_argument("--bertscore-model", help="encoder folder or id (default: packaged MiniLM)")
    ev.add_argument("--bertscore-layers", type=int, default=6, help="encoder layer to use")
    ev.add_argument("--trust-remote-code", action="store_true", help="allow model code from hub")
    _add_data_dir(ev)
    ev.set_defaults(func=_cmd_eval)

    da = sub.add_parser("data", help="list the known datasets, or fetch them into the cache")
    da.add_argument("action", choices=["list", "fetch"])
    _add_data_dir(da)
    da.set_defaults(func=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _quiet_libraries()
        return args.func(args)
    except UsageError as err:
        print(f"icu-unlearn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icu-unlearn: interrupted", file=sys.stderr)
        return 130
