"""The icu-unlearn command line: parse, call the API, print. Bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import typing
from pathlib import Path

from .errors import UsageError
from .table import cell, clip, text_table


def _quiet_libraries() -> None:
    """Third-party notices off, before the libraries load: transformers' warnings and
    progress bars; bitsandbytes' (peft imports it, and sentence-transformers imports peft:
    on CPUs with AVX512-BF16 every command that paired said "Failed to load CPU
    gemm_4bit_forward from kernels-community") until a bnb attack uses it; DeepSpeed's
    (save_pretrained imports it, through accelerate: "Setting accelerator to CPU") unless
    accelerate launched a DeepSpeed run. Errors still show."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false") != "true":
        # DeepSpeed sets its logger's level as it loads; a filter stays
        logging.getLogger("DeepSpeed").addFilter(lambda record: record.levelno >= logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _bitsandbytes_notices(attacks) -> None:
    """bitsandbytes' notices back on where an attack quantizes with it."""
    if any(a.startswith("bnb") for a in attacks):
        logging.getLogger("bitsandbytes").setLevel(logging.NOTSET)


EXIT_CODES = (
    "Exit codes: 0 done; 2 bad input (nothing written); 3 finished without forgetting every "
    "sequence asked (status incomplete, or diverged), the ids still extractable listed, or "
    "damaged a probe.retain record (status retain_damaged, the ids listed); "
    "130 interrupted (continue with --resume)."
)


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="offline data mirror (default: $ICU_DATA_DIR, else the fetch cache)",
    )


def _add_settings(p: argparse.ArgumentParser, cls, only: tuple[str, ...] | None = None) -> None:
    """One option per field of the settings dataclass `cls`, its help from the field's
    metadata: the reason for each default reaches `--help`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or "help" not in f.metadata:
            continue
        flag = "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kind = _scalar(hints[f.name])
        if kind not in (bool, int, float, str):  # structured settings have options of their own
            continue
        text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        if kind is bool:  # a setting on by default is turned off with --no-<name>
            action = argparse.BooleanOptionalAction if f.default is True else "store_true"
            p.add_argument(flag, action=action, default=None, help=text)
            continue
        if not required and f.default is not None:
            text += f" (default {f.default})"
        p.add_argument(flag, type=kind, required=required, default=None, help=text)


def _scalar(hint):
    if typing.get_origin(hint) is list:
        return list
    options = [o for o in typing.get_args(hint) if o is not type(None)] or [hint]
    return options[0]


def _settings(cls, args: argparse.Namespace, base=None, **given):
    """`cls` (or a copy of `base`) with the options the user gave; the rest keep theirs."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if base is not None:
        return dataclasses.replace(base, **values, **given)
    return cls(**(values | given))


def _add_judge_options(p: argparse.ArgumentParser) -> None:
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


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import EvalSettings, evaluate, metric_keys
    from .metrics.memorization import el_range

    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out!r} is a file; give a directory")
    settings = _settings(EvalSettings, args, judge=_judge(args))
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
    keys = metric_keys(settings.el_n) + (["judge"] if settings.judge else [])
    span = el_range(settings.el_window)  # EL's column says which prefix lengths it covers
    header = [f"{k} ({span})" if k.startswith("el_") else k for k in keys]
    # prompt / tested: the tokens the model is given, and those it must not reproduce
    rows = [["id", "prompt", "tested", *header]] + [
        [
            r["id"],
            str(r["prefix_tokens"]),
            str(r["suffix_tokens"]),
            *(cell(r.get(k, r.get(f"{k}_score"))) for k in keys),
        ]
        for r in result.samples
    ]
    shown = rows if len(rows) <= 21 else rows[:21]
    print(text_table(shown))
    if len(rows) > 21:
        print(f"... {len(rows) - 21} more in memorization.jsonl")
    print()
    print(_continuations(args, result.samples[:20]))
    print()
    means = [f"n={len(result.samples)}", *(cell(result.summary[k]) for k in keys)]
    print(text_table([["mean", *header], means]))
    print(f"\n{len(result.samples)} samples in {time.perf_counter() - start:.1f} s", end="")
    print(f"; wrote {args.out}/memorization.jsonl and summary.json" if args.out else "")
    from .report import model_audit_line

    audited = model_audit_line(args.model)  # a run's model: the verdicts audit and report give
    if audited:
        print(audited)
    return 0


def _continuations(args: argparse.Namespace, rows: list[dict]) -> str:
    """Each sample's true suffix beside the model's greedy continuation of its prompt."""
    if args.redact:
        return "true suffixes and continuations: not shown (--redact)"
    from .data.forget import load_forget_set
    from .models import load_tokenizer

    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    samples = load_forget_set(args.forget, tokenizer, args.prefix_length, args.data_dir)
    suffixes = {s.id: s.suffix for s in samples}
    table = [["id", "true suffix", "greedy continuation"]]
    table += [[r["id"], clip(suffixes[r["id"]], 48), clip(r["generation"], 48)] for r in rows]
    return text_table(table)


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
    print(text_table(rows))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"out={args.out}")
    if args.redact:
        overrides.append("redact=true")
    # read and checked before torch and transformers are imported: a mistyped config is
    # answered in a fraction of a second, not after the seconds those imports take
    config = load_config(args.config, overrides)
    from .metrics.memorization import el_range
    from .train import unlearn

    _bitsandbytes_notices(config.audit.attacks)
    result = unlearn(
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        keep_checkpoints=args.keep_checkpoints,
    )
    if not _main_process():  # under accelerate launch the main process speaks for all
        return 0
    before, after = result.manifest["before"], result.manifest["after"]
    keys = [k for k in ("el_" + str(config.stop.el_n), "ma", "bertscore_f1", "bleu") if k in before]
    span = el_range(config.stop.el_window)  # EL's column says which prefix lengths it covers
    header = [f"{k} ({span})" if k.startswith("el_") else k for k in keys]
    print(
        text_table(
            [
                ["forget set", *header],
                ["before", *(f"{before[k]:.4f}" for k in keys)],
                [f"after {result.manifest['epochs']} epochs", *(f"{after[k]:.4f}" for k in keys)],
            ]
        )
    )
    print(_record_table(result, config.stop.el_n, span))
    print(
        f"\nstatus: {result.status}; thresholds EL < {result.manifest['thresholds']['el_max']:.4f}, "
        f"MA < {result.manifest['thresholds']['ma_max']:.4f}; model in {result.model_dir}"
    )
    left = result.manifest.get("still_extractable") or []
    if left:
        print(f"{len(left)} sequence(s) not forgotten as if never trained:")
        for r in left:
            ref = r.get(f"reference_el_{config.stop.el_n}")
            shown = "" if ref is None else f" (reference EL {ref:.4f}, MA {r['reference_ma']:.4f})"
            out = (
                f"; stands out: suffix NLL {r['suffix_nll']:.2f} nats a token"
                if r.get("stands_out")
                else ""
            )
            print(f"  {r['id']}: EL {r['el']:.4f}, MA {r['ma']:.4f}{shown}{out}")
    gap = result.manifest.get("likelihood_vs_reference")
    if gap:
        print(f"suffix likelihood vs the reference: {gap['mean_gap']:+.2f} nats a token on average")
    if result.manifest.get("retained"):
        print(_retained_lines(result.manifest, span))
    audited = result.manifest.get("audit") or {}
    if audited.get("summary"):
        print(f"audit of {result.model_dir}: {audited['summary']}")
    # 3: the run ended without forgetting every sequence asked, or damaged what it had to
    # keep (a pipeline must not go on)
    return 3 if result.status in FAILED else 0


FAILED = ("incomplete", "diverged", "retain_damaged")


def _record_table(result, el_n: int, span: str) -> str:
    """Each forget record: how many tokens it is prompted with and how many are tested, its
    EL and MA before and after, its suffix NLL beside the reference's, how it ended; then
    its greedy continuation after the run beside its true suffix (unless redacted)."""
    reference = result.manifest.get("reference_scores") or {}
    first = {r["id"]: r for r in result.samples if r["epoch"] == 0}
    last = {r["id"]: r for r in result.samples if r["epoch"] == result.manifest["epochs"]}
    key = f"el_{el_n}"
    rows = [["record", "prompt", "tested", f"EL{el_n} ({span})", "MA", "suffix NLL (ref)", "end"]]
    texts = [["record", "true suffix", "continuation after"]]
    for i, b in first.items():
        a = last.get(i, b)
        ref = reference.get(i, {}).get("suffix_nll")
        end = a.get("done") or ("stands out" if a.get("stands_out") else "not done")
        el = "–" if a.get(key) is None else f"{a[key]:.3f}"
        rows.append(
            [
                i, str(b["prefix_tokens"]), str(b["suffix_tokens"]), f"{b[key]:.3f} -> {el}",
                f"{b['ma']:.3f} -> {a['ma']:.3f}",
                f"{a.get('suffix_nll', float('nan')):.2f}" + ("" if ref is None else f" ({ref:.2f})"),
                end,
            ]
        )  # fmt: skip
        texts.append([i, _clip(b.get("true_suffix", "")), _clip(a.get("generation", ""))])
    table = "\n" + text_table(rows)
    if not result.manifest["config"]["redact"]:
        table += "\n\n" + text_table(texts)
    return table


def _clip(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _retained_lines(manifest: dict, span: str) -> str:
    """The kept records (probe.retain): each one's EL and MA before and after, and each
    damaged one named."""
    retained = manifest["retained"]
    head = ["kept record (probe.retain)", f"EL ({span}) before", "after", "MA before", "after"]
    rows = [head] + [
        [i, *(f"{r[when][k]:.4f}" for k in ("el", "ma") for when in ("before", "after"))]
        for i, r in retained["per_record"].items()
    ]
    lines = [text_table(rows)]
    damaged = retained["damaged"]
    if damaged:
        stopped = manifest["diverged"]
        lines.append(
            f"{len(damaged)} kept record(s) DAMAGED at epoch {stopped['epoch']} (MA down more "
            f"than {retained['max_ma_drop']} from its own before the run); stopped and kept "
            f"the model of epoch {stopped['kept_epoch']}:"
        )
        for i, r in damaged.items():
            was = retained["per_record"][i]["before"]
            lines.append(
                f"  {i}: MA {was['ma']:.4f} -> {r['ma']:.4f}, EL {was['el']:.4f} -> {r['el']:.4f}"
            )
    elif retained["max_ma_drop"] is not None:
        lines.append(
            f"no kept record damaged (none lost more than {retained['max_ma_drop']} of its MA)"
        )
    return "\n".join(lines)


def _cmd_memorize(args: argparse.Namespace) -> int:
    from .memorize import MemorizeSettings, memorize

    settings = _settings(MemorizeSettings, args)
    report = memorize(settings, overwrite=args.overwrite, resume=args.resume)
    if not _main_process():
        return 0
    ma = report["ma"]
    print(
        f"{'reached' if report['reached'] else 'did NOT reach'} MA >= {settings.target_ma} "
        f"after {report['epochs']} epochs: min MA {min(ma.values()):.4f}, "
        f"mean {sum(ma.values()) / len(ma):.4f}; model in {report['model_dir']}"
    )
    return 0 if report["reached"] else 3  # 3: finished without planting every sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import QUICK, DemoSettings, run_demo

    # --quick: the small sizes, with whatever the user gave on top
    summary = run_demo(_settings(DemoSettings, args, base=QUICK if args.quick else DemoSettings()))
    return 3 if summary["status"] in FAILED else 0


def _cmd_utility(args: argparse.Namespace) -> int:
    from .utility_run import UtilitySettings, run_utility

    result = run_utility(_settings(UtilitySettings, args), resume=args.resume)
    rows = [["task", "metric", "value", "n", "seconds"]]
    for name, task in result["tasks"].items():
        value = "unavailable" if task["value"] is None else f"{task['value']:.4f}"
        rows.append(
            [name, task["metric"], value, str(task["num_examples"]), f"{task['seconds']:.1f}"]
        )
    for name, value in result["averages"].items():
        rows.append([name, "mean", "–" if value is None else f"{value:.4f}", "", ""])
    print(text_table(rows))
    if args.out:
        print(f"wrote {Path(args.out) / 'utility.json'}")
    return 0


def _scheme(text: str):
    """--scheme temperature=1,top_k=40,top_p=0.9 -> a SamplingScheme."""
    from .audit import SamplingScheme

    types = {"temperature": float, "top_k": int, "top_p": float}
    values = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in types or not value:
            raise UsageError(
                f"--scheme {text!r}: give key=value pairs of temperature, top_k, top_p, "
                "e.g. temperature=1,top_k=40"
            )
        try:
            values[key.strip()] = types[key.strip()](value)
        except ValueError:
            raise UsageError(f"--scheme {text!r}: {key} must be a number") from None
    return SamplingScheme(**values)


def _cmd_audit(args: argparse.Namespace) -> int:
    _bitsandbytes_notices(args.attack or ())
    from .audit import AuditSettings, audit

    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out!r} is a file; give a directory")
    schemes = [_scheme(t) for t in args.scheme] if args.scheme else None
    settings = _settings(AuditSettings, args, **({"schemes": schemes} if schemes else {}))
    result = audit(
        args.model,
        args.forget,
        holdout=args.holdout,
        reference=args.reference,
        settings=settings,
        out=args.out,
        redact=args.redact,
        attacks=args.attack or (),
        data_dir=args.data_dir,
        prefix_length=args.prefix_length,
        progress=True,
    )
    print(result.table())
    if args.out:
        print(f"wrote {Path(args.out) / 'audit.json'}")
    # 3: a sequence leaked (more than under the reference): the deletion is not shown done
    return 3 if result.aggregates["verdicts"]["leaked"] else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import audit_lines, load_run, write_report

    written = write_report(args.runs, args.out, text=args.text)
    for path in args.runs:  # each run's audits in the words run and audit print
        run = load_run(path)
        lines = [f"{run.name}: {line}" for line in audit_lines(run)]
        print("\n".join(lines) or f"{run.name}: not audited")
    print("wrote " + " and ".join(str(p) for p in written))
    return 0


def _cmd_launch(args: argparse.Namespace) -> int:
    from .launch import launch

    return launch(args.argv)


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS

    for name, method in METHODS.items():
        print(f"{name:8s} {method.summary}")
    return 0


def _add_eval_parser(sub, options: bool) -> None:
    ev = sub.add_parser("eval", help="memorization metrics per sample (EL, MA, BERTScore, BLEU)")
    ev.set_defaults(func=_cmd_eval)
    if not options:
        return
    from .evaluate import EvalSettings

    ev.add_argument("--model", required=True, help="hub id, local folder, or smollm2-135m")
    ev.add_argument("--forget", required=True, help="forget set: lm-extraction:32_0, ids=..., file")
    ev.add_argument("--out", help="write memorization.jsonl and summary.json here")
    ev.add_argument("--redact", action="store_true", help="generations as hashes only")
    _add_settings(ev, EvalSettings)
    ev.add_argument("--prefix-length", type=int, default=50, help=PREFIX_LENGTH_HELP)
    ev.add_argument("--trust-remote-code", action="store_true", help="allow model code from hub")
    _add_judge_options(ev)
    _add_data_dir(ev)


PREFIX_LENGTH_HELP = (
    "t0 for {id,text} files: the prompt's tokens (a text under 2 x t0 tokens is split in "
    "the middle)"
)


def _add_audit_parser(sub, options: bool) -> None:
    au = sub.add_parser(
        "audit",
        help="evidence of forgetting beyond greedy decoding, per sequence, with verdicts",
        epilog="Exit code 3 when a sequence leaked (more than under --reference); 0 otherwise.",
    )
    au.set_defaults(func=_cmd_audit)
    if not options:
        return
    from .audit import AuditSettings

    au.add_argument("--model", required=True, help="the model to audit (hub id, folder, run)")
    au.add_argument("--forget", required=True, help="the sequences that must be forgotten")
    au.add_argument("--holdout", help="never-seen sequences like them: membership-test AUCs")
    au.add_argument(
        "--reference", help="a model that never saw the forget set (e.g. before memorize)"
    )
    au.add_argument(
        "--attack",
        action="append",
        metavar="ATTACK",
        help="sample[:N] (the sampling attack, N samples a sequence, default 100) and "
        "beam[:WIDTH] (beam search, default 4): off unless given; quantize:4, quantize:8 "
        "(simulated), bnb:4, bnb:8 (bitsandbytes) or relearn, each followed by the same "
        "measurements (repeatable)",
    )
    au.add_argument(
        "--scheme",
        action="append",
        metavar="K=V,...",
        help="a sampling scheme for the extraction probability, e.g. temperature=1,top_k=40 "
        "(repeatable; default temperature 1, top-k 40)",
    )
    au.add_argument("--out", help="write audit.json here")
    au.add_argument("--redact", action="store_true", help="generated texts as hashes only")
    au.add_argument("--prefix-length", type=int, default=50, help=PREFIX_LENGTH_HELP)
    _add_settings(au, AuditSettings)
    _add_data_dir(au)


def _config_keys_help() -> str:
    """Every config key with its default and the reason for it (RunConfig's field help)."""
    from .config import config_help

    lines = ["config keys (YAML, or --set key=value), default, and why:"]
    for key, default, reason in config_help():
        lines.append(f"  {key} = {default}")
        lines.append(f"      {reason}")
    return "\n".join(lines)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command; with `command`, the options of that one alone: the others need only
    their help line, and some options come from modules that import torch (seconds), which
    `icu-unlearn --help` does without."""
    from .utility_run import UtilitySettings

    def options(name: str) -> bool:
        return command is None or command == name

    parser = argparse.ArgumentParser(
        prog="icu-unlearn",
        description="Make a causal language model forget specific sequences, and prove it.",
        epilog=EXIT_CODES,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_eval_parser(sub, options("eval"))

    run = sub.add_parser(
        "run",
        help="unlearn: any method, any model, any forget set",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(_config_keys_help() + "\n\n" if options("run") else "")
        + EXIT_CODES
        + " stop.thresholds: auto calibrates on stop.heldout (default pile-validation:32, Pile "
        "validation text): if your model may have trained on that text, give held-out "
        "sequences of your own.",
    )
    run.add_argument("config", nargs="?", help="run configuration (YAML)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    run.add_argument("--out", help="run directory (the config's out)")
    run.add_argument("--resume", action="store_true", help="continue a killed run from --out")
    run.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    run.add_argument("--redact", action="store_true", help="forgotten texts as hashes only")
    run.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep checkpoints/ after the run finishes, to extend it later with --resume and "
        "a larger max_epochs (default: removed; a killed run keeps them)",
    )
    run.set_defaults(func=_cmd_run)

    me = sub.add_parser("memorize", help="fine-tune a model until it memorized given sequences")
    me.set_defaults(func=_cmd_memorize)
    if options("memorize"):
        from .memorize import MemorizeSettings

        _add_settings(me, MemorizeSettings)
        me.add_argument("--resume", action="store_true", help="continue a killed planting")
        me.add_argument("--overwrite", action="store_true", help="replace the planting in --out")

    de = sub.add_parser("demo", help="the main job, offline on CPU, with the packaged model")
    de.set_defaults(func=_cmd_demo)
    if options("demo"):
        from .demo import DemoSettings

        _add_settings(de, DemoSettings)
        de.add_argument("--quick", action="store_true", help="a 2-sequence smoke version (CI)")

    ut = sub.add_parser("utility", help="the utility suite: perplexity, classification, dialogue")
    _add_settings(ut, UtilitySettings)
    ut.add_argument(
        "--resume",
        action="store_true",
        help="keep the tasks an interrupted run already wrote to --out, score the rest",
    )
    ut.set_defaults(func=_cmd_utility)

    _add_audit_parser(sub, options("audit"))

    rp = sub.add_parser("report", help="compare runs: tables, curves, timelines, generations")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    rp.add_argument("--out", required=True, help="report.html or report.md (both are written)")
    rp.add_argument(
        "--text",
        action="store_true",
        help="show the forgotten texts (prefixes, true suffixes, generations); by default they "
        "are hashes, so that the report can be shared",
    )
    rp.add_argument("--redact", action="store_true", help="the default; accepted, does nothing")
    rp.set_defaults(func=_cmd_report)

    mt = sub.add_parser("methods", help="list the unlearning methods")
    mt.set_defaults(func=_cmd_methods)

    da = sub.add_parser("data", help="list the known datasets, or fetch them into the cache")
    da.add_argument("action", choices=["list", "fetch"])
    _add_data_dir(da)
    da.set_defaults(func=_cmd_data)

    # every word after `launch` is accelerate's or the command's ("+" prefix: none is ours)
    la = sub.add_parser(
        "launch",
        help="several processes (accelerate launch) keeping the exit codes: "
        "launch [accelerate options] -- COMMAND ...",
        prefix_chars="+",
        add_help=False,
    )
    la.add_argument("argv", nargs=argparse.REMAINDER)
    la.set_defaults(func=_cmd_launch)
    return parser


def _main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


# How long a process other than the main one waits, on bad input, for the launcher to end
# it: every process finds the same problem and the main one says so, but a launcher ends
# every process once one exits, so one that exited first could end the main process
# before it printed (seen under `accelerate launch`: exit 2 and no message).
PEER_GRACE_SECONDS = 15.0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the command is the first word that is not an option: only its options are built
    args = build_parser(next((a for a in argv if not a.startswith("-")), "")).parse_args(argv)
    try:
        _quiet_libraries()
        return args.func(args)
    except UsageError as err:
        if _main_process():  # every process finds the same problem; one says so
            print(f"icu-unlearn: error: {err}", file=sys.stderr)
        else:
            time.sleep(PEER_GRACE_SECONDS)  # ended here once the main process has said it
            # still running: a problem the main process did not find
            rank = os.environ["RANK"]
            print(f"icu-unlearn: error (process {rank}): {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icu-unlearn: interrupted", file=sys.stderr)
        return 130
