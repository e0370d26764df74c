"""Plain-text tables for the terminal: left-aligned columns under a rule."""

from __future__ import annotations


def text_table(rows: list[list[str]]) -> str:
    """The first row is the header; every row has the same number of cells."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cell(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def clip(text: str, width: int) -> str:
    """`text` on one line (its whitespace runs as single spaces), cut to `width` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
