"""The data directory: an offline mirror, or a cache that `icu-unlearn data fetch` fills.

Every file is known by its path inside the directory and the public address it
came from, so that online users can fetch what offline users copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..paths import cache_dir

_EXTRACTION = "https://raw.githubusercontent.com/ethz-privsec/lm-extraction-benchmark-data/main"
_KU = "https://raw.githubusercontent.com/joeljang/knowledge-unlearning/main"


@dataclass(frozen=True)
class DataFile:
    path: str  # inside the data directory
    url: str  # public address
    what: str


def _known_files() -> list[DataFile]:
    files = [
        DataFile(
            f"lm_extraction_benchmark/{split}_{part}.npy",
            f"{_EXTRACTION}/{split}_{part}.npy",
            f"lm-extraction {split} {part} (GPT-2 token ids)",
        )
        for split in ("train", "val")
        for part in ("preprefix", "prefix", "suffix")
    ]
    files += [
        DataFile(
            f"unlearning_targets/lm_extraction_{n}_{run}.csv",
            f"{_KU}/data/lm_extraction_{n}_{run}.csv",
            f"forget set lm-extraction:{n}_{run}",
        )
        for n in (1, 4, 8, 32, 128)
        for run in range(5)
    ]
    files += [
        DataFile(f"eval/{name}", f"{_KU}/validation_data/{name}", f"utility set {name}")
        for name in (
            "pile.csv",
            "wikitext.csv",
            "lambada.csv",
            "pubmed_qa.csv",
            "valid_dm_mathematics.csv",
            "wizard_of_wikipedia.json",
            "empathetic_dialogues.json",
            "blended_skill_talk.json",
            "wizard_of_internet.json",
        )
    ]
    return files


KNOWN_FILES: list[DataFile] = _known_files()


def data_dir(explicit: str | Path | None = None) -> Path:
    """`--data-dir`, else `ICU_DATA_DIR`, else the fetch cache."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("ICU_DATA_DIR"):
        return Path(os.environ["ICU_DATA_DIR"]).expanduser()
    return cache_dir() / "data"


def data_file(relative: str, root: str | Path | None = None) -> Path:
    """The path of a known file, or a one-line error saying how to get it."""
    path = data_dir(root) / relative
    if not path.exists():
        raise UsageError(
            f"{relative} is not in the data directory {data_dir(root)}; run "
            "`icu-unlearn data fetch` when online, or point --data-dir / ICU_DATA_DIR at a mirror"
        )
    return path


@cache
def _load_array(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def extraction_array(split: str, part: str, root: str | Path | None = None) -> np.ndarray:
    """One lm-extraction array, e.g. ("train", "suffix") -> (15000, 50) GPT-2 ids."""
    return _load_array(str(data_file(f"lm_extraction_benchmark/{split}_{part}.npy", root)))


def fetch(root: str | Path | None = None, timeout: float = 30.0, progress=print) -> list[Path]:
    """Download every known file that the data directory lacks."""
    target = data_dir(root)
    fetched = []
    for entry in KNOWN_FILES:
        path = target / entry.path
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        progress(f"fetching {entry.path}")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with (
                urllib.request.urlopen(entry.url, timeout=timeout) as response,
                os.fdopen(fd, "wb") as out,
            ):
                shutil.copyfileobj(response, out)
            os.replace(tmp, path)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise UsageError(
                f"cannot download {entry.url} ({err}); when offline, point --data-dir or "
                "ICU_DATA_DIR at a local mirror instead"
            ) from err
        fetched.append(path)
    return fetched


def status(root: str | Path | None = None) -> list[tuple[DataFile, bool]]:
    base = data_dir(root)
    return [(entry, (base / entry.path).exists()) for entry in KNOWN_FILES]
