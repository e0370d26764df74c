"""The icu-unlearn command line: parse, call the API, print. Bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import os
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


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--el-n", type=int, default=10, help="n-gram size of EL (default 10)")
    p.add_argument("--el-window", action="store_true", help="EL over prefix lengths >= t0 only")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--prefix-length", type=int, default=50, help="t0 for {id,text} files")
    p.add_argument("--bertscore-model", help="encoder folder or id (default: packaged MiniLM)")
    p.add_argument("--bertscore-layers", type=int, default=6, help="encoder layer to use")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from hub")
    p.add_argument("--judge-url", help="OpenAI-compatible endpoint for the paper's GPT score")
    p.add_argument("--judge-model", help="the judge's model name")
    p.add_argument(
        "--judge-key-env", default="OPENAI_API_KEY", help="environment variable with the key"
    )


def _judge(args: argparse.Namespace):
    from .metrics.judge import JudgeConfig

    if not args.judge_url:
        if args.judge_model:
            raise UsageError("--judge-model needs --judge-url")
        return None
    return JudgeConfig(args.judge_url, args.judge_model or "", args.judge_key_env)


def _cell(value) -> str:
    return "–" if value is None else f"{value:.4f}"


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
        judge=_judge(args),
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
        redact=args.redact,
    )
    keys = metric_keys(args.el_n) + (["judge"] if settings.judge else [])
    rows = [["id", *keys]] + [
        [r["id"], *(_cell(r.get(k, r.get(f"{k}_score"))) for k in keys)] for r in result.samples
    ]
    shown = rows if len(rows) <= 21 else rows[:21]
    print(_table(shown))
    if len(rows) > 21:
        print(f"... {len(rows) - 21} more in memorization.jsonl")
    print()
    print(
        _table(
            [
                ["mean", *keys],
                [f"n={len(result.samples)}", *(_cell(result.summary[k]) for k in keys)],
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


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import unlearn

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"out={args.out}")
    if args.redact:
        overrides.append("redact=true")
    config = load_config(args.config, overrides)
    result = unlearn(config, resume=args.resume, overwrite=args.overwrite)
    if not _main_process():  # under accelerate launch the main process speaks for all
        return 0
    before, after = result.manifest["before"], result.manifest["after"]
    keys = ["el_" + str(config.stop.el_n), "ma", "bertscore_f1", "bleu"]
    print(
        _table(
            [
                ["forget set", *keys],
                ["before", *(f"{before[k]:.4f}" for k in keys)],
                [f"after {result.manifest['epochs']} epochs", *(f"{after[k]:.4f}" for k in keys)],
            ]
        )
    )
    print(
        f"\nstatus: {result.status}; thresholds EL < {result.manifest['thresholds']['el_max']:.4f}, "
        f"MA < {result.manifest['thresholds']['ma_max']:.4f}; model in {result.model_dir}"
    )
    return 0


def _cmd_memorize(args: argparse.Namespace) -> int:
    from .memorize import memorize

    report = memorize(
        args.model,
        args.forget,
        args.out,
        lr=args.lr,
        max_epochs=args.max_epochs,
        target_ma=args.target_ma,
        batch_size=args.batch_size,
        seed=args.seed,
        prefix_length=args.prefix_length,
        data_dir=args.data_dir,
        overwrite=args.overwrite,
    )
    ma = report["ma"]
    print(
        f"{'reached' if report['reached'] else 'did NOT reach'} MA >= {args.target_ma} "
        f"after {report['epochs']} epochs: min MA {min(ma.values()):.4f}, "
        f"mean {sum(ma.values()) / len(ma):.4f}; model in {args.out}"
    )
    return 0 if report["reached"] else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import QUICK, DemoSettings, run_demo

    settings = DemoSettings(
        model=args.model,
        plant=args.plant or (QUICK.plant if args.quick else DemoSettings.plant),
        forget_count=args.forget_count,
        out=args.out,
        data_dir=args.data_dir,
    )
    if args.quick:
        settings = QUICK.with_options(settings)
    if args.max_epochs:
        settings.max_epochs = args.max_epochs
    run_demo(settings)
    return 0


def _cmd_utility(args: argparse.Namespace) -> int:
    from .io import atomic_write_json
    from .metrics.utility import TASKS, evaluate_utility
    from .models import load_model_and_tokenizer

    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else list(TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise UsageError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out!r} is a file; give a directory")
    done = _utility_done(out, args) if args.resume else None
    model, tokenizer = load_model_and_tokenizer(args.model, args.trust_remote_code)

    def write(result: dict) -> None:  # after every task: hours of scoring survive a kill
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "utility.json", result | {"model": args.model})

    result = evaluate_utility(
        model,
        tokenizer,
        tasks=tasks,
        limit=args.limit,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        progress=True,
        done=done,
        after_task=write,
    )
    result["model"] = args.model
    rows = [["task", "metric", "value", "n", "seconds"]]
    for name, task in result["tasks"].items():
        value = "unavailable" if task["value"] is None else f"{task['value']:.4f}"
        rows.append(
            [name, task["metric"], value, str(task["num_examples"]), f"{task['seconds']:.1f}"]
        )
    for name, value in result["averages"].items():
        rows.append([name, "mean", "–" if value is None else f"{value:.4f}", "", ""])
    print(_table(rows))
    if out is not None:
        write(result)
        print(f"wrote {out / 'utility.json'}")
    return 0


def _utility_done(out: Path | None, args: argparse.Namespace) -> dict:
    """The task results of the interrupted run in `out`, when it scored the same way."""
    import json

    path = out / "utility.json" if out is not None else None
    if path is None or not path.exists():
        raise UsageError("nothing to resume: give the --out of an earlier utility run")
    try:
        earlier = json.loads(path.read_text())
        settings, model = earlier["settings"], earlier["model"]
    except (ValueError, KeyError):
        raise UsageError(f"{path} is not a utility result; choose another --out") from None
    asked = {"limit": args.limit, "batch_size": args.batch_size}
    differs = [k for k, v in asked.items() if settings.get(k) != v]
    if model != args.model or differs:
        what = "model" if model != args.model else f"--{differs[0].replace('_', '-')}"
        raise UsageError(f"{path} was scored with another {what}; resume with the same settings")
    return earlier["tasks"]


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    written = write_report(args.runs, args.out, redact=args.redact)
    print("wrote " + " and ".join(str(p) for p in written))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS

    for name, method in METHODS.items():
        print(f"{name:8s} {method.summary}")
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
    ev.add_argument("--redact", action="store_true", help="generations as hashes only")
    _add_eval_options(ev)
    _add_data_dir(ev)
    ev.set_defaults(func=_cmd_eval)

    run = sub.add_parser("run", help="unlearn: any method, any model, any forget set")
    run.add_argument("config", nargs="?", help="run configuration (YAML)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    run.add_argument("--out", help="run directory (the config's out)")
    run.add_argument("--resume", action="store_true", help="continue a killed run from --out")
    run.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    run.add_argument("--redact", action="store_true", help="forgotten texts as hashes only")
    run.set_defaults(func=_cmd_run)

    me = sub.add_parser("memorize", help="fine-tune a model until it memorized given sequences")
    me.add_argument("--model", required=True)
    me.add_argument("--forget", required=True, help="the sequences to plant (forget-set spec)")
    me.add_argument("--out", required=True, help="folder for the memorizing model")
    me.add_argument("--lr", type=float, default=1e-4)
    me.add_argument("--max-epochs", type=int, default=100)
    me.add_argument("--target-ma", type=float, default=0.95, help="stop when every MA reaches it")
    me.add_argument("--batch-size", type=int, default=8)
    me.add_argument("--seed", type=int, default=42)
    me.add_argument("--prefix-length", type=int, default=50)
    me.add_argument("--overwrite", action="store_true")
    _add_data_dir(me)
    me.set_defaults(func=_cmd_memorize)

    de = sub.add_parser("demo", help="the main job, offline on CPU, with the packaged model")
    de.add_argument("--model", default="smollm2-135m", help="the model to plant into and unlearn")
    de.add_argument("--plant", help="sequences to plant (default lm-extraction:8_0)")
    de.add_argument("--forget-count", type=int, help="how many of them to forget (default half)")
    de.add_argument("--max-epochs", type=int, help="ICU epoch budget (default 25)")
    de.add_argument("--out", default="runs/demo", help="planted model, run, report (runs/demo)")
    de.add_argument("--quick", action="store_true", help="a 2-sequence smoke version (CI)")
    _add_data_dir(de)
    de.set_defaults(func=_cmd_demo)

    ut = sub.add_parser("utility", help="the utility suite: perplexity, classification, dialogue")
    ut.add_argument("--model", required=True, help="hub id, local folder, or smollm2-135m")
    ut.add_argument("--tasks", help="comma-separated task names (default: all)")
    ut.add_argument("--limit", type=int, help="the first N examples of each task")
    ut.add_argument("--batch-size", type=int, default=16, help="requests per forward pass")
    ut.add_argument("--out", help="write utility.json here (a run directory, say)")
    ut.add_argument("--trust-remote-code", action="store_true", help="allow model code from hub")
    ut.add_argument(
        "--resume",
        action="store_true",
        help="keep the tasks an interrupted run already wrote to --out, score the rest",
    )
    _add_data_dir(ut)
    ut.set_defaults(func=_cmd_utility)

    rp = sub.add_parser("report", help="compare runs: tables, curves, timelines, generations")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    rp.add_argument("--out", required=True, help="report.html or report.md (both are written)")
    rp.add_argument("--redact", action="store_true", help="forgotten texts as hashes only")
    rp.set_defaults(func=_cmd_report)

    mt = sub.add_parser("methods", help="list the unlearning methods")
    mt.set_defaults(func=_cmd_methods)

    da = sub.add_parser("data", help="list the known datasets, or fetch them into the cache")
    da.add_argument("action", choices=["list", "fetch"])
    _add_data_dir(da)
    da.set_defaults(func=_cmd_data)
    return parser


def _main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _quiet_libraries()
        return args.func(args)
    except UsageError as err:
        if _main_process():  # every process finds the same problem; one says so
            print(f"icu-unlearn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icu-unlearn: interrupted", file=sys.stderr)
        return 130
