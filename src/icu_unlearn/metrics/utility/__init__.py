"""The utility suite (paper §4.1-4.2): perplexity, classification accuracy, dialogue F1.

`evaluate_utility(model, tokenizer)` runs the tasks of `TASKS` and returns one
JSON-serialisable dict: per task its value, per-example records and timing, the
paper's Cls Avg. and Dia Avg., and the settings. A task whose data cannot be found
(MathQA offline) is reported `unavailable` with the reason, never substituted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...data.mirror import data_dir as resolve_data_dir
from ...errors import UsageError
from .scoring import MAX_LENGTH, ScoringSettings
from .sources import DataUnavailable, load_rows
from .tasks import TASKS, Task

__all__ = ["TASKS", "Task", "evaluate_utility"]


def evaluate_utility(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[str] | None = None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 32,
    progress: bool = True,
    done: dict[str, dict] | None = None,
    after_task: Callable[[dict], None] | None = None,
) -> dict:
    """Score `model` on `tasks` (default: all of TASKS), each on its first `limit` examples.

    `tokenizer` must have a pad token and pad on the left (`models.prepare_tokenizer`).
    `data_dir` defaults to ICU_DATA_DIR, then the fetch cache (`data.mirror.data_dir`).
    `done` holds task results of an earlier call with the same settings, kept as they
    are; `after_task` receives the result so far (`"complete": False` until the last
    task), so a run of hours can be written, and continued, task by task.
    """
    names = list(TASKS) if tasks is None else list(tasks)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise UsageError(f"unknown utility task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    if limit is not None and limit < 1:
        raise UsageError("limit must be at least 1 (or None for every example)")
    if tokenizer.pad_token_id is None:
        raise UsageError("the tokenizer has no pad token; pass it through models.prepare_tokenizer")
    max_length = min(MAX_LENGTH, model.config.max_position_embeddings)
    if max_new_tokens >= max_length:
        raise UsageError(f"max_new_tokens must be below the model's {max_length}-token window")
    root = resolve_data_dir(data_dir)
    recorded = {
        "tasks": names,
        "limit": limit,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "max_length": max_length,
        "data_dir": str(root),
    }
    results = {}
    for name in names:
        if done and name in done:
            results[name] = done[name]
            continue
        settings = ScoringSettings(
            batch_size,
            max_new_tokens,
            max_length,
            partial(tqdm, desc=name, disable=not progress),
        )
        results[name] = _run_task(TASKS[name], model, tokenizer, root, limit, settings)
        if after_task is not None and len(results) < len(names):
            after_task(_result(results, recorded, complete=False))
    return _result(results, recorded, complete=True)


def _result(results: dict, settings: dict, complete: bool) -> dict:
    averages, averaged_over = _averages(results)
    return {
        "tasks": dict(results),
        "averages": averages,
        "averaged_over": averaged_over,
        "complete": complete,
        "settings": settings,
    }


def _run_task(task: Task, model, tokenizer, root: Path, limit, settings: ScoringSettings) -> dict:
    started = time.perf_counter()
    try:
        rows, origin = load_rows(task.sources, root, limit)
    except DataUnavailable as err:
        return {
            "metric": task.metric,
            "value": None,
            "num_examples": 0,
            "seconds": round(time.perf_counter() - started, 2),
            "status": "unavailable",
            "reason": str(err),
            "examples": [],
        }
    examples = [task.to_example(row, index) for index, row in enumerate(rows)]
    score = task.scorer(model, tokenizer, examples, settings)
    return {
        "metric": task.metric,
        "value": None if math.isnan(score.value) else score.value,
        **score.extra,
        "num_examples": len(score.examples),
        "seconds": round(time.perf_counter() - started, 2),
        "status": "ok",
        "source": origin,
        "examples": score.examples,
    }


def _averages(results: dict[str, dict]) -> tuple[dict, dict]:
    """Cls Avg. and Dia Avg. over the tasks that ran; None when none of a group did."""
    averages, over = {}, {}
    for key in ("cls_avg", "dia_avg"):
        names = [
            n for n, r in results.items() if TASKS[n].average == key and r["value"] is not None
        ]
        over[key] = names
        averages[key] = sum(results[n]["value"] for n in names) / len(names) if names else None
    return averages, over
