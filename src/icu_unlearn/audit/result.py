"""AuditResult: what `audit()` returns and writes (`audit.json`), and its terminal table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_write_json
from .table import render, summary_line


def json_safe(obj):
    """A copy with non-finite floats as None: JSON has no NaN or infinity."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass
class AuditResult:
    settings: dict
    sequences: list[dict]
    aggregates: dict
    holdout: list[dict] = field(default_factory=list)
    attacks: dict = field(default_factory=dict)  # spec -> {"sequences", "aggregates", ...}

    def to_dict(self) -> dict:
        return json_safe(
            {
                "settings": self.settings,
                "aggregates": self.aggregates,
                "sequences": self.sequences,
                "holdout": self.holdout,
                "attacks": self.attacks,
            }
        )

    def write(self, out: str | Path) -> Path:
        """Write `out/audit.json` atomically; returns its path."""
        path = Path(out) / "audit.json"
        atomic_write_json(path, self.to_dict())
        return path

    def summary_line(self) -> str:
        return summary_line(self.aggregates)

    def table(self) -> str:
        """The terminal table: one line per sequence, then membership, holdout, attacks."""
        return render(self.to_dict())
