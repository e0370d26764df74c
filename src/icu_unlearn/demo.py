"""`icu-unlearn demo`: the whole job on the packaged model, offline, on CPU, in minutes.

Plant a few lm-extraction sequences into the model (so it has something to forget),
show that they are extractable, run ICU on half of them, show that they no longer
are, that the other half and ordinary text are unharmed, and write the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import load_config
from .data.forget import load_forget_set
from .errors import UsageError
from .evaluate import EvalSettings, evaluate
from .io import atomic_write_json
from .memorize import MemorizeSettings, plant, planted_with
from .metrics.memorization import el_range
from .models import load_model_and_tokenizer
from .precision import check_precision, resolve
from .report import write_report
from .table import clip, text_table
from .train import unlearn


@dataclass
class DemoSettings:
    model: str = field(
        default="smollm2-135m", metadata={"help": "the model to plant into and unlearn"}
    )
    plant: str = field(
        default="lm-extraction:8_0",
        metadata={"help": "sequences to plant: a published forget set of code, licences, web text"},
    )
    forget_count: int | None = field(
        default=None, metadata={"help": "how many of them to forget (default: the first half)"}
    )
    out: str = field(default="runs/demo", metadata={"help": "planted model, run and report"})
    lr: float = field(
        default=1e-4,
        metadata={
            "help": "ICU's rate: configs/smollm2-cpu.yaml, the slowest to forget 8 in 15 epochs"
        },
    )
    batch_size: int = field(
        default=2,
        metadata={
            "help": "two updates an epoch: the per-epoch check costs more than a step; "
            "at batch 4 MA was still 0.85 after 9 epochs"
        },
    )
    max_epochs: int = field(default=30, metadata={"help": "ICU epoch budget"})
    pool_limit: int = field(
        default=500,
        metadata={"help": "the first N pool rows: 500 embed in ~12 s on 2 cores, then cached"},
    )
    plant_lr: float = field(default=1e-4, metadata={"help": "planting's learning rate"})
    plant_batch_size: int = field(
        default=2, metadata={"help": "four updates an epoch: 8 sequences took 13 epochs at 8"}
    )
    plant_max_epochs: int = field(default=40, metadata={"help": "planting's epoch budget"})
    holdout: str = field(
        default="lm-extraction:8_1",
        metadata={"help": "never-planted sequences like the planted ones: the audit's holdout"},
    )
    perplexity_texts: int = field(
        default=10, metadata={"help": "Pile and Wikitext validation texts for the perplexity check"}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "offline data mirror (default: $ICU_DATA_DIR)"}
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "fp32 or bf16 for every step: planting, the scores, ICU and the audits; "
            "auto: bf16 where the machine computes it natively (a CPU with AVX-512 BF16 or "
            "AMX, a GPU that supports it), else fp32 (benchmarks/results/bf16_demo.md "
            "compares them on the demo's subjects)"
        },
    )
    progress: bool = True

    def __post_init__(self):
        check_precision(self.precision, auto=True)


# `--quick`: the whole pipeline on two short sequences, for CI and a first look.
QUICK = DemoSettings(
    plant="lm-extraction:ids=4719,2831",
    lr=2e-4,
    batch_size=1,
    max_epochs=4,
    pool_limit=64,
    plant_lr=2e-4,
    plant_batch_size=1,
    plant_max_epochs=20,
    perplexity_texts=2,
)


def run_demo(settings: DemoSettings) -> dict:
    started = time.perf_counter()
    if settings.precision == "auto":
        settings = replace(settings, precision=resolve("auto"))
        native = "computes" if settings.precision == "bf16" else "does not compute"
        print(
            f"precision: {settings.precision} (this machine {native} bfloat16 natively; "
            "--precision fp32 or bf16 to choose)"
        )
    out = Path(settings.out)
    _, tokenizer = load_model_and_tokenizer(settings.model)
    planted_samples = load_forget_set(settings.plant, tokenizer, 50, settings.data_dir)
    ids = [s.id for s in planted_samples]
    forget_ids, keep_ids = halves(ids, settings.forget_count)
    forget_spec, forgotten = ids_spec(forget_ids), set(forget_ids)

    step = _Steps(started)
    step(1, f"plant {len(ids)} sequences of {settings.plant} into {settings.model}")
    planted = _plant(settings, out / "planted")

    step(2, "what the planted model emits for each prefix (greedy)")
    before = _memorization(planted, settings.plant, settings)
    suffixes = {s.id: s.suffix for s in planted_samples}
    print(_sample_table(before, forgotten, suffixes))
    ppl_before = _perplexity(planted, settings)
    before_audit = _audit(planted, forget_spec, settings)
    print(f"\naudit of the forget set, against the never-planted model: {before_audit}")

    step(
        3,
        f"ICU: forget {len(forget_ids)} of them ({', '.join(forget_ids)}); "
        f"keep the other {len(keep_ids)}",
    )
    config = load_config(
        None, icu_settings(settings, planted, forget_spec, out / "icu", keep=ids_spec(keep_ids))
    )
    result = unlearn(config, overwrite=True, progress=settings.progress)

    step(4, "the same prefixes after unlearning")
    after = _memorization(str(result.model_dir), settings.plant, settings)
    print(_sample_table(after, forgotten, suffixes))
    ppl_after = _perplexity(str(result.model_dir), settings)
    print(f"\naudit of the forget set after ICU: {result.manifest['audit']['summary']}")

    step(5, "summary")
    summary = _summary(before, after, forgotten, ppl_before, ppl_after, result)
    for line in summary["lines"]:
        print(line)
    # the demo's sequences are public (lm-extraction): its report shows them
    written = write_report([result.out], out / "report.html", text=True)
    print(f"\nreport: {written[0]} (and {written[1].name}); run: {result.out}")
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["step_seconds"] = step.finish()
    atomic_write_json(out / "demo.json", summary)
    return summary


def icu_settings(
    settings: DemoSettings, planted: str, forget: str, out: Path, keep: str | None = None
) -> list[str]:
    """The demo's ICU run, as `--set` overrides (benchmarks/bench_run.py runs it too).

    `keep`: the planted sequences that must stay, held by the retain term and watched
    every epoch (`probe.retain`). Measured on the demo's subjects (bf16, one thread,
    `benchmarks/results/demo_retain.md`): the same 5 epochs and audit (one record done
    an epoch sooner), the kept records' mean EL_10 0.937 after instead of 0.805 (7003
    stayed at 1.0 instead of falling to 0.52); the epochs took 1.36x as long, 1.28x once
    the kept records' continuations were verified too (idle, two threads: 91 s against
    71 s, `demo_time.md`)."""
    return [
        f"model={planted}",
        f"forget={forget}",
        f"lr={settings.lr}",
        f"batch_size={settings.batch_size}",
        f"max_epochs={settings.max_epochs}",
        # every forgotten sequence must be no more extractable than under the model
        # that never saw it, and its likelihood goes no lower than that model's
        f"stop.reference={settings.model}",
        f"analogous.pool_limit={settings.pool_limit}",
        f"out={out}",
        f"audit.holdout={settings.holdout}",
        f"precision={resolve(settings.precision)}",
        *([f"probe.retain={keep}"] if keep else []),
        *([f"data_dir={settings.data_dir}"] if settings.data_dir else []),
    ]


def halves(ids: list[str], forget_count: int | None) -> tuple[list[str], list[str]]:
    """The planted `ids` the demo forgets, the first `forget_count` (default half), and
    those it keeps, the rest (benchmarks build the demo's run from these too)."""
    count = forget_count or len(ids) // 2
    if not 0 < count < len(ids):
        raise UsageError(
            f"--forget-count must be between 1 and {len(ids) - 1} for {len(ids)} planted sequences"
        )
    return ids[:count], ids[count:]


def ids_spec(ids: list[str]) -> str:
    return "lm-extraction:ids=" + ",".join(ids)


class _Steps:
    """The demo's numbered banners, each with the time since the start; `finish` gives
    each step's seconds (demo.json), so that a slow demo says where its time went."""

    def __init__(self, started: float):
        self.started = started
        self.marks: list[tuple[int, float]] = []

    def __call__(self, number: int, text: str) -> None:
        now = time.perf_counter()
        self.marks.append((number, now))
        print(f"\n== {number}. {text}  [{now - self.started:.0f} s]", flush=True)

    def finish(self) -> dict[str, float]:
        ends = [t for _, t in self.marks[1:]] + [time.perf_counter()]
        return {str(n): round(end - t, 1) for (n, t), end in zip(self.marks, ends, strict=True)}


def _plant(settings: DemoSettings, folder: Path) -> str:
    """Memorize the planted set once: a later demo with the same settings reuses it, a
    killed one resumes it, one with other settings plants over it."""
    planting = MemorizeSettings(
        settings.model,
        settings.plant,
        str(folder),
        lr=settings.plant_lr,
        max_epochs=settings.plant_max_epochs,
        batch_size=settings.plant_batch_size,
        data_dir=settings.data_dir,
        precision=settings.precision,
    )
    reused = planted_with(planting) is not None
    report = plant(planting, progress=settings.progress, replace=True)
    if not report["reached"]:
        raise UsageError(
            f"planting did not reach MA 0.95 in {report['epochs']} epochs; "
            "raise --plant-max-epochs or plant fewer sequences"
        )
    if reused:
        print(f"reusing {folder} (planted in {report['epochs']} epochs earlier)")
    else:
        print(f"planted in {report['epochs']} epochs ({report['seconds']:.0f} s)")
    return str(folder)


def _memorization(model: str, spec: str, settings: DemoSettings) -> list[dict]:
    return evaluate(
        model,
        spec,
        settings=EvalSettings(precision=settings.precision),
        data_dir=settings.data_dir,
        progress=settings.progress,
    ).samples


def _audit(model: str, forget: str, settings: DemoSettings) -> str:
    """The default audit (no sampling or beam attack) of `model` on the sequences to forget."""
    from .audit import AuditSettings, audit

    result = audit(
        model,
        forget,
        holdout=settings.holdout,
        reference=settings.model,
        settings=AuditSettings(el_window=True, precision=settings.precision),
        data_dir=settings.data_dir,
    )
    return result.summary_line()


def _perplexity(model: str, settings: DemoSettings) -> dict:
    from .metrics.utility import evaluate_utility

    net, tokenizer = load_model_and_tokenizer(model)
    result = evaluate_utility(
        net,
        tokenizer,
        tasks=["pile", "wikitext"],
        limit=settings.perplexity_texts,
        data_dir=settings.data_dir,
        progress=False,
    )
    return {name: task["value"] for name, task in result["tasks"].items()}


def _sample_table(rows: list[dict], forget: set[str], suffixes: dict[str, str]) -> str:
    el = f"EL10 ({el_range(EvalSettings().el_window)})"  # `_memorization`'s range
    table = [["id", "asked", el, "MA", "true suffix", "model's continuation"]]
    for r in rows:
        table.append(
            [
                r["id"],
                "forget" if r["id"] in forget else "keep",
                f"{r['el_10']:.3f}",
                f"{r['ma']:.3f}",
                clip(suffixes[r["id"]], 38),
                clip(r["generation"], 38),
            ]
        )
    return text_table(table)


def _summary(before, after, forget, ppl_before, ppl_after, result) -> dict:
    def mean(rows, key, group):
        values = [r[key] for r in rows if (r["id"] in forget) == group]
        return sum(values) / len(values)

    numbers = {
        "forget_el10": [mean(before, "el_10", True), mean(after, "el_10", True)],
        "forget_ma": [mean(before, "ma", True), mean(after, "ma", True)],
        "keep_el10": [mean(before, "el_10", False), mean(after, "el_10", False)],
        "keep_ma": [mean(before, "ma", False), mean(after, "ma", False)],
        **{f"{k}_ppl": [ppl_before[k], ppl_after[k]] for k in ppl_before},
    }
    lines = [f"ICU stopped: {result.status} after {result.manifest['epochs']} epochs"]
    for r in result.manifest["still_extractable"]:
        lines.append(
            f"  still extractable on its own: {r['id']} (EL {r['el']:.3f}, MA {r['ma']:.3f})"
        )
    for key, (b, a) in numbers.items():
        lines.append(f"  {key:14s} {b:9.4f} -> {a:9.4f}")
    return {"status": result.status, "epochs": result.manifest["epochs"], **numbers, "lines": lines}
