"""`icu-unlearn utility`: the utility suite on one model, written task by task so that an
interrupted run of hours can be resumed with `--resume`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .io import atomic_write_json


@dataclass
class UtilitySettings:
    model: str = field(metadata={"help": "hub id, local folder, or smollm2-135m"})
    tasks: str | None = field(
        default=None, metadata={"help": "comma-separated task names (default: all)"}
    )
    limit: int | None = field(
        default=None,
        metadata={"help": "the first N examples of each task (a task has up to thousands)"},
    )
    batch_size: int = field(default=16, metadata={"help": "requests per forward pass"})
    out: str | None = field(
        default=None, metadata={"help": "write utility.json here (a run directory, say)"}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "allow model code from the hub (off: safetensors only)"}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "offline data mirror (default: $ICU_DATA_DIR)"}
    )

    def task_names(self) -> list[str]:
        from .metrics.utility import TASKS

        names = [t.strip() for t in self.tasks.split(",")] if self.tasks else list(TASKS)
        unknown = [t for t in names if t not in TASKS]
        if unknown:
            raise UsageError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}")
        return names

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise UsageError("--limit must be at least 1")
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise UsageError(f"--out {self.out!r} is a file; give a directory")


def run_utility(settings: UtilitySettings, resume: bool = False, progress: bool = True) -> dict:
    """Score the model; with `out`, utility.json is rewritten after every task."""
    from .metrics.utility import evaluate_utility
    from .models import load_model_and_tokenizer

    tasks = settings.task_names()
    out = Path(settings.out) if settings.out else None
    done = _done(out, settings) if resume else None
    model, tokenizer = load_model_and_tokenizer(settings.model, settings.trust_remote_code)

    def write(result: dict) -> None:  # after every task: hours of scoring survive a kill
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "utility.json", result | {"model": settings.model})

    result = evaluate_utility(
        model,
        tokenizer,
        tasks=tasks,
        limit=settings.limit,
        data_dir=settings.data_dir,
        batch_size=settings.batch_size,
        progress=progress,
        done=done,
        after_task=write,
    )
    result["model"] = settings.model
    write(result)
    return result


def _done(out: Path | None, settings: UtilitySettings) -> dict:
    """The task results of the interrupted run in `out`, when it scored the same way."""
    path = out / "utility.json" if out is not None else None
    if path is None or not path.exists():
        raise UsageError("nothing to resume: give the --out of an earlier utility run")
    try:
        earlier = json.loads(path.read_text())
        scored, model = earlier["settings"], earlier["model"]
    except (ValueError, KeyError):
        raise UsageError(f"{path} is not a utility result; choose another --out") from None
    asked = {"limit": settings.limit, "batch_size": settings.batch_size}
    differs = [k for k, v in asked.items() if scored.get(k) != v]
    if model != settings.model or differs:
        what = "model" if model != settings.model else f"--{differs[0].replace('_', '-')}"
        raise UsageError(f"{path} was scored with another {what}; resume with the same settings")
    return earlier["tasks"]
