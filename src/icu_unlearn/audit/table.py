"""The terminal table of an audit: plain text, one line per sequence."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .membership import PRIVLEAK_ATTACK

from ..metrics.memorization import el_range

if TYPE_CHECKING:
    from .result import AuditResult


def summary_line(aggregates: dict) -> str:
    """ "30 of 32 not extractable, 2 as the reference model, 0 leaked" (+ how many stand out)."""
    v = aggregates["verdicts"]
    line = (
        f"{v['not_extractable']} of {aggregates['num_sequences']} not extractable, "
        f"{v['as_reference']} as the reference model, {v['leaked']} leaked"
    )
    if aggregates["stands_out"]:
        line += f"; {aggregates['stands_out']} stand out (forgotten too well)"
    return line


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def _sequence_lines(result: AuditResult) -> list[str]:
    s = result.settings
    el, n = f"el_{s['el_n']}", str(s["leak_samples"])
    with_reference = result.aggregates["reference"] is not None
    header = [
        "id",
        "verdict",
        "leaked by",
        f"{el.upper()} ({el_range(s['el_window'])})",  # an older audit.json has no el_range
        "ES",
        "log10 p",
        f"p({n})",
        "sample",
        "run",
        "beam",
        "NLL",
    ]
    if with_reference:
        header += [f"p({n}) R", "NLL R"]
    rows = [header + ["stands out"]]
    for row in result.sequences:
        m, r = row["model"], row["reference"]
        first = m["probabilistic"][0]
        cells = [
            row["id"],
            row["verdict"],
            ",".join(row["leaked_by"]) or "-",
            _num(m["greedy"][el]),
            _num(m["greedy"]["extraction_strength"]),
            "-inf" if first["log10_p"] is None else f"{first['log10_p']:.1f}",
            _num(first["chance"][n]),
            "-" if m["sampling"] is None else ("exact" if m["sampling"]["best_exact"] else "no"),
            "-" if m["sampling"] is None else str(m["sampling"]["longest_run"]),
            "-" if m["beam"] is None else ("exact" if m["beam"]["exact"] else "no"),
            _num(m["membership"]["loss"]),
        ]
        if with_reference:
            cells += [_num(r["probabilistic"][0]["chance"][n]), _num(r["membership"]["loss"])]
        rows.append(cells + [{True: "yes", False: "no", None: "-"}[row["stands_out"]]])
    return _columns(rows)


def _membership_lines(aggregates: dict, k: float) -> list[str]:
    if aggregates["membership"] is None:
        return ["membership AUC: no holdout given"]
    rows = [["membership AUC", "model", "reference", "PrivLeak %"]]
    for attack, a in aggregates["membership"].items():
        leak = a["privleak"]
        rows.append(
            [
                attack,
                _num(a["auc_model"]),
                _num(a["auc_reference"]),
                "-" if leak is None else f"{leak:+.1f}",
            ]
        )
    note = "forget vs holdout: 0.5 cannot tell them apart, 1 members, 0 forgotten too well"
    head = aggregates["membership"][PRIVLEAK_ATTACK]
    if head["privleak"] is not None:
        value = f"{head['privleak']:+.1f}%"
    else:
        value = "- (needs a reference)" if head["auc_reference"] is None else "- (reference AUC 1)"
    headline = (
        f"PrivLeak (MUSE's, Min-K% k={k:g}, the reference as the retrained model): {value}; "
        "0 as if never trained, + forgotten too well, -100 memorized"
    )
    return _columns(rows) + [note, headline]


def _holdout_line(aggregates: dict) -> str:
    h = aggregates["holdout"]
    if h is None:
        return ""
    m, r = h["model"], h["reference"]
    ref = (lambda k: f" (reference {_num(r[k])})") if r else (lambda k: "")
    return (
        f"holdout ({h['num_sequences']}): NLL {_num(m['nll'])}{ref('nll')} nats/token, "
        f"MA {_num(m['ma'])}{ref('ma')}, suffix MA {_num(m['suffix_ma'])}{ref('suffix_ma')}"
    )


def _attack_lines(result: AuditResult) -> list[str]:
    n = str(result.settings["leak_samples"])
    lines = []
    for spec, attacked in result.attacks.items():
        agg = attacked["aggregates"]
        chance = agg["model"]["probabilistic"][0]["mean_chance"][n]
        mia = agg["membership"]
        auc = "" if mia is None else f", Min-K%++ AUC {_num(mia['min_k_pp']['auc_model'])}"
        lines.append(f"after {spec}: {summary_line(agg)}; mean p({n}) {_num(chance)}{auc}")
    return lines


def render(result: AuditResult) -> str:
    lines = _sequence_lines(result) + [""]
    lines += _membership_lines(result.aggregates, result.settings["mia_k"])
    holdout = _holdout_line(result.aggregates)
    lines += [holdout] if holdout else []
    lines += _attack_lines(result)
    lines += ["", result.summary_line()]
    return "\n".join(lines)
