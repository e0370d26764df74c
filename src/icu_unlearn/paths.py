"""Where the project keeps converted models, fetched data and embedding caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`ICU_CACHE_DIR`, else `$XDG_CACHE_HOME/icu-unlearn`, else `~/.cache/icu-unlearn`."""
    if os.environ.get("ICU_CACHE_DIR"):
        return Path(os.environ["ICU_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "icu-unlearn"
