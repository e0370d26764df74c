"""Reports of finished runs: a Table-1-style comparison, per-epoch curves, a per-sample
removal timeline and before/after generations, as Markdown and one self-contained HTML
page. Every forgotten text (prefix, true suffix, generations) is a hash unless `text` asks
for it: a report is written to be shared.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .io import atomic_write_text
from .metrics.memorization import el_range
from .privacy import redact_text
from .run_dir import ended_manifest


@dataclass
class RunRecord:
    """One run directory as written by `icu-unlearn run`."""

    path: Path
    manifest: dict
    epochs: list[dict]
    samples: list[dict]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def el_key(self) -> str:
        return f"el_{self.manifest['config']['stop']['el_n']}"

    @property
    def el_label(self) -> str:
        """The EL column's name with its range: EL10 (p>=t0), or EL10 (all) for a run that
        averaged over every prefix length."""
        stop = self.manifest["config"]["stop"]
        return f"EL{stop['el_n']} ({el_range(stop.get('el_window', False))})"

    @property
    def seconds(self) -> float:
        return sum(e.get("seconds", 0.0) for e in self.epochs)

    @property
    def utility(self) -> dict | None:
        """`utility.json` of the unlearned model, when `icu-unlearn utility --out RUN` wrote one."""
        path = self.path / "utility.json"
        return json.loads(path.read_text()) if path.is_file() else None


def load_run(path: str | Path) -> RunRecord:
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"{path} is not a run directory: it has no manifest.json")
    manifest = ended_manifest(path)
    if manifest is None:
        raise UsageError(f"{path} is an unfinished run; finish it with --resume first")
    return RunRecord(path, manifest, _jsonl(path / "epochs.jsonl"), _jsonl(path / "samples.jsonl"))


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# (column, key in the before/after summaries, format); the forget-set metrics come first
COLUMNS = [
    ("EL", "el", "{:.4f}"),
    ("MA", "ma", "{:.4f}"),
    ("BERTScore", "bertscore_f1", "{:.3f}"),
    ("retained MA", "retain_ma", "{:.4f}"),
    ("held-out PPL", "heldout_ppl", "{:.2f}"),
]


# (column, task in utility.json, format): the paper's utility columns
UTILITY_COLUMNS = [
    ("Cls Avg.", "cls_avg", "{:.4f}"),
    ("Dia Avg.", "dia_avg", "{:.4f}"),
    ("Pile PPL", "pile", "{:.2f}"),
    ("Wikitext PPL", "wikitext", "{:.2f}"),
]


def _utility_value(utility: dict | None, key: str):
    if utility is None:
        return None
    if key in utility.get("averages", {}):
        return utility["averages"][key]
    return utility.get("tasks", {}).get(key, {}).get("value")


def comparison_rows(runs: list[RunRecord]) -> list[dict]:
    """Per run: the method, how it ended, epochs and time, and each metric before -> after."""
    rows = []
    for run in runs:
        m = run.manifest
        before, after = m["before"] or {}, m["after"] or {}
        row = {
            "run": run.name,
            "method": m["method"],
            "status": m["status"],
            "epochs": m["epochs"],
            "minutes": run.seconds / 60,
        }
        for column, key, _ in COLUMNS:
            key = run.el_key if key == "el" else key
            row[column] = (before.get(key), after.get(key))
        for column, key, _ in UTILITY_COLUMNS:
            row[column] = (None, _utility_value(run.utility, key))
        rows.append(row)
    return rows


def markdown_table(runs: list[RunRecord]) -> str:
    rows = comparison_rows(runs)
    shown = [c for c in COLUMNS + UTILITY_COLUMNS if any(r[c[0]][1] is not None for r in rows)]
    heads = ["run", "method", "status", "epochs", "min"]
    heads += [_el_label(runs) if c == "EL" else c for c, _, _ in shown]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        cells = [r["run"], r["method"], r["status"], str(r["epochs"]), f"{r['minutes']:.1f}"]
        for column, _, fmt in shown:
            before, after = r[column]
            cells.append(_arrow(before, after, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _arrow(before, after, fmt: str) -> str:
    if after is None:
        return "–"
    if before is None:
        return fmt.format(after)
    return f"{fmt.format(before)} → {fmt.format(after)}"


# ---------------------------------------------------------------- the full report


def sample_timeline(run: RunRecord) -> list[dict]:
    """Per forget sample: EL per epoch, the epoch IUR removed it (None: never), the
    generations before (epoch 0) and after (last epoch)."""
    by_id: dict[str, dict] = {}
    for row in run.samples:
        entry = by_id.setdefault(
            row["id"],
            {"id": row["id"], "el": {}, "removed_at": None, "before": None, "after": None},
        )
        entry["el"][row["epoch"]] = row[run.el_key]
        if row.get("removed") and entry["removed_at"] is None:
            entry["removed_at"] = row["epoch"]
        if row["epoch"] == 0:
            entry["before"] = row
        if entry["after"] is None or row["epoch"] >= entry["after"]["epoch"]:
            entry["after"] = row
    return list(by_id.values())


def _generation_rows(run: RunRecord, redact: bool) -> list[dict]:
    rows = []
    for entry in sample_timeline(run):
        before, after = entry["before"], entry["after"]
        texts = {
            "prefix": before.get("prefix", ""),
            # the true suffix ("reference" in runs written before the field was renamed)
            "true_suffix": before.get("true_suffix", before.get("reference", "")),
            "before": before.get("generation", ""),
            "after": after.get("generation", ""),
            # what a model that never saw the record writes (runs with stop.reference)
            "reference": before.get("reference_generation", ""),
        }
        if redact:
            texts = {k: redact_text(v) for k, v in texts.items()}
        rows.append(
            {
                "id": entry["id"],
                **texts,
                "el_before": before[run.el_key],
                "el_after": after[run.el_key],
                "ma_before": before["ma"],
                "ma_after": after["ma"],
                "removed_at": entry["removed_at"],
            }
        )
    return rows


def _figure(draw) -> str:
    """A matplotlib figure as an embedded PNG data URI (the HTML stays one file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


CURVE_PANELS = [("EL", None), ("ma", "MA"), ("bertscore_f1", "BERTScore F1"), ("active", "active")]


def curve_segments(run: RunRecord, key: str) -> list[list[tuple[int, float]]]:
    """The measured points of one run's curve (`key` a CURVE_PANELS key), split into runs of
    consecutive epochs: epoch 0 is the manifest's before, and an epoch whose value is None
    (the lazy schedule leaves EL unmeasured on most epochs) or missing ends a segment, so
    that no line is drawn through epochs that were not measured."""
    column = "el" if key == "EL" else key
    points = [(e["epoch"], e[column]) for e in run.epochs if e.get(column) is not None]
    before = run.manifest["before"] or {}
    start = before.get(run.el_key if key == "EL" else key)
    if key == "active":
        start = run.manifest["forget"]["num_samples"]
    if start is not None:
        points.insert(0, (0, start))
    segments: list[list[tuple[int, float]]] = []
    for epoch, value in points:
        if segments and epoch == segments[-1][-1][0] + 1:
            segments[-1].append((epoch, value))
        else:
            segments.append([(epoch, value)])
    return segments


def _curves(runs: list[RunRecord]) -> str:
    def draw(plt):
        fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
        for ax, (key, title) in zip(axes, CURVE_PANELS, strict=True):
            for run in runs:
                color = None  # one colour per run across its segments
                for i, segment in enumerate(curve_segments(run, key)):
                    (line,) = ax.plot(
                        *zip(*segment, strict=True),
                        marker="o",
                        markersize=3,
                        color=color,
                        label=run.name if i == 0 else None,
                    )
                    color = line.get_color()
            ax.set_title(title or run.el_label)
            ax.set_xlabel("epoch (points: measured)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        return fig

    return _figure(draw)


def _timeline_plot(run: RunRecord) -> str:
    timeline = sample_timeline(run)
    epochs = max((max(t["el"]) for t in timeline), default=0)

    def draw(plt):
        import numpy as np

        grid = np.full((len(timeline), epochs + 1), np.nan)
        for i, t in enumerate(timeline):
            for epoch, value in t["el"].items():
                if value is not None:  # None: not scored, its MA could not pass (left blank)
                    grid[i, epoch] = value
        fig, ax = plt.subplots(
            figsize=(min(2 + 0.35 * (epochs + 1), 14), 0.8 + 0.3 * len(timeline))
        )
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        for i, t in enumerate(timeline):
            if t["removed_at"] is not None:
                ax.plot(t["removed_at"], i, marker="x", color="red", markersize=8)
        ax.set_yticks(range(len(timeline)), [t["id"] for t in timeline], fontsize=7)
        ax.set_xlabel("epoch (x: removed from the active set by IUR; blank: EL not scored)")
        ax.set_title(f"{run.name}: {run.el_label} per sample and epoch")
        fig.colorbar(image, ax=ax, fraction=0.03)
        return fig

    return _figure(draw)


END_HEADS = ["id", "end", "EL", "MA", "ref EL", "ref MA", "NLL", "ref NLL", "audit"]


@dataclass
class AuditRecord:
    """One audit.json of a run's model: the run's own, or one `icu-unlearn audit --model
    RUN/model --out RUN/...` wrote later."""

    path: Path
    data: dict
    own: bool  # the run's own (RUN/audit.json, written as the run finished)

    @property
    def summary(self) -> str:
        from .audit.table import summary_line

        return summary_line(self.data["aggregates"])

    @property
    def attacks(self) -> dict[str, str]:
        """Per attack that audited an attacked copy (quantize, relearn, ...): its summary."""
        from .audit.table import summary_line

        return {k: summary_line(v["aggregates"]) for k, v in self.data["attacks"].items()}

    def describe(self, run: RunRecord) -> str:
        """Where it is and what it ran: "audit-q/audit.json, attacks quantize:4"."""
        attacks = self.data["settings"].get("attacks") or []
        ran = f"attacks {', '.join(attacks)}" if attacks else "no attacks"
        return f"{self.path.relative_to(run.path)}, {ran}"

    def verdicts(self) -> dict[str, str]:
        """Per sequence: its verdict, the tests that leaked it, and whether it stands out."""
        verdicts = {}
        for s in self.data["sequences"]:
            flag = " (stands out)" if s.get("stands_out") else ""
            leaked = f" by {', '.join(s['leaked_by'])}" if s["verdict"] == "leaked" else ""
            verdicts[s["id"]] = s["verdict"] + leaked + flag
        return verdicts


def run_audits(run: RunRecord) -> tuple[AuditRecord | None, AuditRecord | None]:
    """The run's own audit and the newest audit of its model (by modification time) found
    under the run's folder, when that is another: the one a user ran later, with attacks."""
    model = (run.path / "model").resolve()
    found = []
    for path in sorted(run.path.rglob("audit.json")):
        if {"model", "checkpoints"} & set(path.relative_to(run.path).parts[:-1]):
            continue
        try:
            data = json.loads(path.read_text())
            spec = Path(data["settings"]["model"]).expanduser()
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not an audit this version wrote
        # a relative --model resolves from where audit ran: its last two parts name it here
        own = path.parent == run.path  # written by the run (or by an audit --out RUN)
        if (
            own
            or spec.resolve() == model
            or (not spec.is_absolute() and spec.parts[-2:] == (run.path.name, "model"))
        ):
            found.append((path.stat().st_mtime, AuditRecord(path, data, own)))
    own = next((a for _, a in found if a.own), None)
    latest = max(found, key=lambda f: f[0])[1] if found else None
    return own, (None if latest is None or latest.own else latest)


def model_audit_line(model: str | Path) -> str | None:
    """For a run's model folder (RUN/model): the summary line of the newest audit of it
    (`run_audits`), so that `eval` on it says what `audit` and `report` say; else None."""
    folder = Path(model).expanduser()
    if folder.name != "model" or not (folder.parent / "manifest.json").is_file():
        return None
    try:
        run = load_run(folder.parent)
    except (UsageError, OSError, ValueError):
        return None  # unfinished, or not a run this version wrote: nothing to say
    own, latest = run_audits(run)
    chosen = latest or own
    if chosen is None:
        return None
    return f"latest audit of this model ({run.path}/{chosen.describe(run)}): {chosen.summary}"


def audit_lines(run: RunRecord) -> list[str]:
    """The run's own audit and the latest audit of its model, one summary line each (the
    words `run` and `audit` print), the latest with each attack's."""
    own, latest = run_audits(run)
    lines = []
    if own is not None:
        lines.append(f"audit (the run's own, {own.describe(run)}): {own.summary}")
    elif (run.manifest.get("audit") or {}).get("summary"):
        lines.append(f"audit (the run's own): {run.manifest['audit']['summary']}")
    if latest is not None:
        lines.append(f"latest audit ({latest.describe(run)}): {latest.summary}")
        lines += [f"  after {spec}: {summary}" for spec, summary in latest.attacks.items()]
    return lines


def end_state_rows(run: RunRecord) -> list[list[str]]:
    """Per forget sequence at the end: done by which rule (or still extractable), its EL,
    MA and suffix NLL beside the never-trained reference's, and the audit's verdict."""
    m, key = run.manifest, run.el_key
    last = [r for r in run.samples if r["epoch"] == m["epochs"]]
    reference = m.get("reference_scores") or {}
    own, latest = run_audits(run)
    verdicts = own.verdicts() if own else {}
    later = latest.verdicts() if latest else None  # a column of its own, when there is one
    rows = []
    for r in last:
        ref = reference.get(r["id"], {})
        done = r.get("done")
        rows.append(
            [
                r["id"],
                {"criteria": "done", "reference": "done (as reference)"}.get(done, "EXTRACTABLE")
                if "done" in r
                else "–",
                *(_num(v) for v in (r.get(key), r.get("ma"), ref.get(key), ref.get("ma"))),
                *(_num(v, "{:.2f}") for v in (r.get("suffix_nll"), ref.get("suffix_nll"))),
                verdicts.get(r["id"], "–"),
                *([later.get(r["id"], "–")] if later is not None else []),
            ]
        )
    return rows


def end_heads(run: RunRecord) -> list[str]:
    return END_HEADS + (["latest audit"] if run_audits(run)[1] is not None else [])


def _num(value, fmt: str = "{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def _end_state_markdown(run: RunRecord) -> list[str]:
    m = run.manifest
    parts = [f"\n## {run.name}: every forget sequence at the end\n"]
    parts += [f"- {line.strip()}" for line in audit_lines(run)] + [""]
    left = m.get("still_extractable") or []
    if left:
        parts.append(f"Still extractable on their own: {', '.join(r['id'] for r in left)}.\n")
    heads = end_heads(run)
    parts.append("| " + " | ".join(heads) + " |")
    parts.append("|" + "---|" * len(heads))
    parts += ["| " + " | ".join(row) + " |" for row in end_state_rows(run)]
    return parts


def render_markdown(runs: list[RunRecord], redact: bool = False) -> str:
    parts = ["# icu-unlearn report\n", "## Comparison\n", markdown_table(runs)]
    if redact:
        note = "Forgotten texts are shown as hashes (`icu-unlearn report --text` shows them).\n"
        parts.insert(1, note)
    for run in runs:
        parts += _end_state_markdown(run)
    for run in runs:
        parts.append(f"\n## {run.name} ({run.manifest['method']}): before / after generations\n")
        parts.append(
            "| id | removed at | EL | MA | prefix | true suffix | before | after | "
            "reference model |"
        )
        parts.append("|---|---|---|---|---|---|---|---|---|")
        for g in _generation_rows(run, redact):
            cells = [_md(g[k]) for k in ("prefix", "true_suffix", "before", "after", "reference")]
            removed = "–" if g["removed_at"] is None else str(g["removed_at"])
            parts.append(
                f"| {g['id']} | {removed} | {g['el_before']:.3f} → {g['el_after']:.3f} | "
                f"{g['ma_before']:.3f} → {g['ma_after']:.3f} | " + " | ".join(cells) + " |"
            )
    return "\n".join(parts) + "\n"


def _el_label(runs: list[RunRecord]) -> str:
    labels = {r.el_label for r in runs}
    if len(labels) > 1:
        raise UsageError(
            f"the runs measured EL differently ({', '.join(sorted(labels))}); "
            "compare runs with the same stop.el_n and stop.el_window"
        )
    return labels.pop() if labels else "EL10"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "⏎").replace("\r", "")


def render_html(runs: list[RunRecord], redact: bool = False) -> str:
    esc = html.escape
    rows = comparison_rows(runs)
    shown = [c for c in COLUMNS + UTILITY_COLUMNS if any(r[c[0]][1] is not None for r in rows)]
    head = "".join(f"<th>{esc(h)}</th>" for h in ["run", "method", "status", "epochs", "min"])
    head += "".join(f"<th>{esc(_el_label(runs) if c == 'EL' else c)}</th>" for c, _, _ in shown)
    body = ""
    for r in rows:
        cells = [r["run"], r["method"], r["status"], str(r["epochs"]), f"{r['minutes']:.1f}"]
        cells += [_arrow(*r[c], fmt) for c, _, fmt in shown]
        body += "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>\n"
    sections = [
        "<h2>Comparison</h2>",
        "<p>Cells are before → after; EL, MA and BERTScore are the forget set's means.</p>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        "<h2>Per-epoch curves</h2>",
        f'<img alt="per-epoch curves" src="{_curves(runs)}">',
    ]
    for run in runs:
        sections.append(f"<h2>{esc(run.name)}: every forget sequence at the end</h2>")
        audits = "".join(f"<li>{esc(line.strip())}</li>" for line in audit_lines(run))
        if audits:
            sections.append(f"<ul>{audits}</ul>")
        end = "".join(
            "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>\n"
            for row in end_state_rows(run)
        )
        heads = "".join(f"<th>{esc(h)}</th>" for h in end_heads(run))
        sections.append(f"<table><thead><tr>{heads}</tr></thead><tbody>{end}</tbody></table>")
    for run in runs:
        sections.append(f"<h2>{esc(run.name)}: per-sample removal timeline</h2>")
        sections.append(f'<img alt="removal timeline" src="{_timeline_plot(run)}">')
        sections.append(f"<h3>{esc(run.name)}: generations before and after</h3>")
        gen_rows = ""
        for g in _generation_rows(run, redact):
            removed = "–" if g["removed_at"] is None else str(g["removed_at"])
            gen_rows += (
                f"<tr><td>{esc(g['id'])}</td><td>{removed}</td>"
                f"<td>{g['el_before']:.3f} → {g['el_after']:.3f}</td>"
                f"<td>{g['ma_before']:.3f} → {g['ma_after']:.3f}</td>"
                + "".join(
                    f"<td><pre>{esc(g[k])}</pre></td>"
                    for k in ("prefix", "true_suffix", "before", "after", "reference")
                )
                + "</tr>\n"
            )
        sections.append(
            "<table class=gen><thead><tr><th>id</th><th>removed at</th><th>EL</th><th>MA</th>"
            "<th>prefix</th><th>true suffix</th><th>before</th><th>after</th>"
            "<th>reference model</th></tr></thead>"
            f"<tbody>{gen_rows}</tbody></table>"
        )
    note = (
        "<p><b>Redacted:</b> forgotten texts are shown as hashes "
        "(<code>icu-unlearn report --text</code> shows them).</p>"
        if redact
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>icu-unlearn report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
th {{ background: #f3f3f3; }}
table.gen pre {{ white-space: pre-wrap; max-width: 22em; margin: 0; font-size: 0.85em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>icu-unlearn report</h1>{note}
{"".join(sections)}
</body></html>
"""


def write_report(run_dirs, out: str | Path, text: bool = False) -> list[Path]:
    """The report of `run_dirs` as `out` (.html or .md) and its sibling of the other kind;
    forgotten texts as hashes unless `text`."""
    if not run_dirs:
        raise UsageError("give at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    out = Path(out)
    if out.suffix not in (".html", ".md"):
        raise UsageError(f"--out {out} must end in .html or .md")
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: {out.parent} is not a directory")
    html_path, md_path = out.with_suffix(".html"), out.with_suffix(".md")
    atomic_write_text(html_path, render_html(runs, redact=not text))
    atomic_write_text(md_path, render_markdown(runs, redact=not text))
    return [html_path, md_path]
