"""The paper's protocol at the scale a CPU affords: plant, unlearn with every method from the
same planted model, measure forgetting and utility, write the table and the report.

    ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/cpu_protocol.py \
        --forget lm-extraction:32_0 --keep lm-extraction:8_1 --limit 100

Runs are kept in --out; a rerun skips the finished ones, so a killed protocol goes on.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from icu_unlearn import load_config  # noqa: E402
from icu_unlearn.data.forget import load_forget_set  # noqa: E402
from icu_unlearn.demo import ids_spec  # noqa: E402
from icu_unlearn.io import atomic_write_json  # noqa: E402
from icu_unlearn.memorize import MemorizeSettings, plant  # noqa: E402
from icu_unlearn.metrics.utility import evaluate_utility  # noqa: E402
from icu_unlearn.models import load_model_and_tokenizer  # noqa: E402
from icu_unlearn.report import load_run, markdown_table, write_report  # noqa: E402
from icu_unlearn.train import finish_run  # noqa: E402

METHODS = ["icu", "kumpr", "kl", "llmu", "dpo", "npo"]
# Utility tasks: the paper's, MathQA aside (no offline data); dialogue F1 is slow on CPU.
TASKS = [
    "pile",
    "wikitext",
    "lambada",
    "hellaswag",
    "winogrande",
    "copa",
    "arc_easy",
    "arc_challenge",
    "piqa",
    "pubmedqa",
    "wizard_of_wikipedia",
    "empathetic_dialogues",
    "blended_skill_talk",
    "wizard_of_internet",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--forget", default="lm-extraction:32_0")
    parser.add_argument("--keep", default="lm-extraction:8_1", help="planted, not to forget")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--limit", type=int, default=100, help="examples per utility task")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--lr", type=float, default=1e-4, help="configs/smollm2-cpu.yaml")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--grad-accum", type=int, default=1, help="micro-batches a step: same update, less memory"
    )
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--pool-limit", type=int, default=2000)
    parser.add_argument(
        "--el-window",
        action="store_true",
        help="EL over prefix lengths >= t0 (the authors' code): a quarter of the decoding",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further run setting for every method, e.g. stop.reference=smollm2-135m",
    )
    parser.add_argument("--out", default=str(ROOT / "runs" / "cpu_protocol"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    started = time.perf_counter()
    out = Path(args.out)
    tasks = args.tasks.split(",")

    _, tokenizer = load_model_and_tokenizer(args.model)
    forget = [s.id for s in load_forget_set(args.forget, tokenizer)]
    keep = [s.id for s in load_forget_set(args.keep, tokenizer) if s.id not in forget]
    keep_spec = ids_spec(keep)
    planted = out / "planted"
    planting = MemorizeSettings(
        args.model, ids_spec(forget + keep), str(planted), lr=1e-4, max_epochs=60, batch_size=8
    )
    report = plant(planting, progress=True)
    print(f"planted {len(forget) + len(keep)} sequences in {report['epochs']} epochs")
    planted_utility = _utility(str(planted), planted / "utility.json", tasks, args.limit)
    utilities = [planted_utility]

    for method in args.methods.split(","):
        run_dir = out / method
        config = load_config(
            None,
            [
                f"model={planted}",
                f"forget={args.forget}",
                f"method={method}",
                f"probe.retain={keep_spec}",
                f"lr={args.lr}",
                f"batch_size={args.batch_size}",
                f"grad_accum={args.grad_accum}",
                f"max_epochs={args.max_epochs}",
                f"analogous.pool_limit={args.pool_limit}",
                f"stop.el_window={str(args.el_window).lower()}",
                f"out={run_dir}",
                *args.set,
            ],
        )
        manifest = finish_run(config, progress=True)
        print(f"{method}: {manifest['status']} after {manifest['epochs']} epochs")
        utilities.append(
            _utility(str(run_dir / "model"), run_dir / "utility.json", tasks, args.limit)
        )

    runs = [load_run(out / m) for m in args.methods.split(",")]
    results = Path(args.results)
    write_report([r.path for r in runs], results / "cpu_protocol_report.html")  # texts hashed
    minutes = (time.perf_counter() - started) / 60
    # what the whole protocol cost, however many invocations it took: planting, every
    # run's epochs and every utility evaluation, as each recorded its own seconds
    recorded = json.loads((planted / "memorize.json").read_text())["seconds"]
    recorded += sum(r.seconds for r in runs)
    recorded += sum(t["seconds"] for u in utilities for t in u["tasks"].values())
    planted_row = " | ".join(
        f"{k} {v:.4f}" for k, v in _headline(planted_utility).items() if v is not None
    )
    text = (
        "# CPU protocol: every method from one planted SmolLM2-135M\n\n"
        f"Command: `ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/cpu_protocol.py "
        f"{' '.join(sys.argv[1:])}`  \n"
        f"Machine: {platform.machine()}, {platform.system()}, CPU only; "
        f"{recorded / 60:.0f} min of recorded compute in all (this invocation {minutes:.0f} min); "
        f"{time.strftime('%Y-%m-%d')}  \n"
        f"Forget set {args.forget} ({len(forget)} sequences) planted together with "
        f"{len(keep)} sequences to keep ({keep_spec}); lr {args.lr}, batch {args.batch_size}, "
        f"at most {args.max_epochs} epochs; EL over "
        f"{'prefix lengths >= t0' if args.el_window else 'every prefix length'}; "
        f"utility on the first {args.limit} examples of each task.  \n"
        f"Planted model's utility: {planted_row}\n\n" + markdown_table(runs)
    )
    (results / "cpu_protocol.md").write_text(text)
    print(text)


def _headline(utility: dict) -> dict:
    tasks = utility["tasks"]
    return {
        "Cls Avg.": utility["averages"]["cls_avg"],
        "Dia Avg.": utility["averages"]["dia_avg"],
        "Pile PPL": tasks.get("pile", {}).get("value"),
        "Wikitext PPL": tasks.get("wikitext", {}).get("value"),
    }


def _utility(model: str, path: Path, tasks: list[str], limit: int) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    net, tokenizer = load_model_and_tokenizer(model)
    result = evaluate_utility(net, tokenizer, tasks=tasks, limit=limit)
    atomic_write_json(path, result)
    return result


if __name__ == "__main__":
    main()
