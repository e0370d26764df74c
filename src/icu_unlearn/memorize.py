"""Plant sequences into a model (fine-tune until memorized), to build unlearning test subjects.

Planting runs through the one training loop as the method `memorize`, so it has what
every run has: several processes, checkpoints, `--resume`, the same outputs. The
planted model is `OUT/model`; `OUT/memorize.json` summarizes the planting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState

from . import run_dir
from .config import RunConfig, load_config
from .errors import UsageError
from .io import atomic_write_json
from .precision import HELP as PRECISION_HELP
from .precision import check_precision
from .train import unlearn


@dataclass
class MemorizeSettings:
    model: str = field(metadata={"help": "hub id, local folder, or smollm2-135m"})
    forget: str = field(metadata={"help": "the sequences to plant (a forget-set spec)"})
    out: str = field(metadata={"help": "run folder; the planted model is OUT/model"})
    lr: float = field(
        default=1e-4, metadata={"help": "SmolLM2-135M plants 8 sequences in ~10 epochs here"}
    )
    max_epochs: int = field(default=100, metadata={"help": "epoch budget"})
    target_ma: float = field(
        default=0.95, metadata={"help": "stop when every sequence's MA reaches it"}
    )
    batch_size: int = field(default=8, metadata={"help": "sequences per update"})
    seed: int = field(default=42, metadata={"help": "order of the sequences each epoch"})
    prefix_length: int = field(
        default=50,
        metadata={
            "help": "t0 for {id,text} files (a text under 2 x t0 tokens: split in the middle)"
        },
    )
    data_dir: str | None = field(default=None, metadata={"help": "offline data mirror"})
    precision: str = field(default="fp32", metadata={"help": PRECISION_HELP})

    def __post_init__(self):
        check_precision(self.precision)


def memorize(
    settings: MemorizeSettings,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Fine-tune on the whole sequences until every one has MA >= target_ma."""
    config = _run_config(settings)
    result = unlearn(config, resume=resume, overwrite=overwrite, progress=progress)
    final = [r for r in result.samples if r["epoch"] == result.manifest["epochs"]]
    report = {
        "model": settings.model,
        "forget": settings.forget,
        "epochs": result.manifest["epochs"],
        "reached": result.status == "criteria_met",
        "target_ma": settings.target_ma,
        "ma": {r["id"]: r["ma"] for r in final},
        "lr": settings.lr,
        "precision": settings.precision,
        "seconds": round(sum(r.get("seconds", 0.0) for r in result.epochs), 1),
        "history": [_history(result.samples, e) for e in result.epochs if "diverged" not in e],
        "model_dir": str(result.model_dir),
        # what was planted, as content hashes (never the text): an audit of this model
        # refuses a "never seen" holdout that was in fact planted
        "planted_sha256": sorted(result.manifest["forget"]["sample_sha256"].values()),
    }
    if PartialState().is_main_process:
        atomic_write_json(Path(settings.out) / "memorize.json", report)
    return report


def plant(settings: MemorizeSettings, progress: bool = False, replace: bool = False) -> dict:
    """The report of the planting `settings` describe, once it has ended (what
    `train.finish_run` is for runs): a planting that ended is read, not run again; a killed
    or interrupted one resumes from its newest checkpoint; otherwise it starts. A planting
    in that folder made with other settings (max_epochs aside) is refused, or with
    `replace` planted over. For the demo and the benchmarks, which plant once and must go
    on where they were stopped."""
    if (report := planted_with(settings)) is not None:
        return report
    out, config = Path(settings.out), _run_config(settings)
    if not run_dir.started_with(out, config):
        if not replace:
            raise UsageError(
                f"{out} holds a planting made with other settings; give another out, or remove it"
            )
        return memorize(settings, overwrite=True, progress=progress)
    resume = (out / "checkpoints" / "LATEST").is_file()
    return memorize(settings, resume=resume, overwrite=not resume, progress=progress)


def planted_with(settings: MemorizeSettings) -> dict | None:
    """The report of a planting in `settings.out` that ended and was made with `settings`
    (max_epochs aside, and keys added to the config since); None otherwise."""
    out, report = Path(settings.out), Path(settings.out) / "memorize.json"
    ended = run_dir.ended_manifest(out) is not None and report.is_file()
    if not ended or not run_dir.started_with(out, _run_config(settings), added_since_ok=True):
        return None
    return json.loads(report.read_text())


def _run_config(settings: MemorizeSettings) -> RunConfig:
    overrides = {
        "model": settings.model,
        "forget": settings.forget,
        "method": "memorize",
        "lr": settings.lr,
        "batch_size": settings.batch_size,
        "max_epochs": settings.max_epochs,
        "seed": settings.seed,
        "prefix_length": settings.prefix_length,
        "out": settings.out,
        "memorize.target_ma": settings.target_ma,
        "precision": settings.precision,
        **({"data_dir": settings.data_dir} if settings.data_dir else {}),
    }
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def _history(samples: list[dict], epoch: dict) -> dict:
    ma = [r["ma"] for r in samples if r["epoch"] == epoch["epoch"]]
    return {
        "epoch": epoch["epoch"],
        "loss": epoch["loss"],
        "min_ma": min(ma),
        "mean_ma": sum(ma) / len(ma),
    }
