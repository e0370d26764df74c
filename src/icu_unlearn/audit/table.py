"""The terminal table of an audit: plain text, one line per sequence, read from the
audit.json form (`AuditResult.to_dict()`)."""

from __future__ import annotations

import textwrap

from ..audit_settings import SamplingScheme
from ..metrics.memorization import el_range
from .membership import PRIVLEAK_ATTACK


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


def _sequence_lines(audit: dict) -> list[str]:
    s = audit["settings"]
    el, n = f"el_{s['el_n']}", str(s["leak_samples"])
    with_reference = audit["aggregates"]["reference"] is not None
    sampled, beamed = s["num_samples"] > 0, s["num_beams"] > 0  # the attacks asked for
    header = [
        "id",
        "verdict",
        "leaked by",
        f"{el.upper()} ({el_range(s['el_window'])})",  # an older audit.json has no el_range
        "ES",
        "log10 p",
        f"p({n})",
        *(["sample", "run"] if sampled else []),
        *(["beam"] if beamed else []),
        "NLL",
    ]
    if with_reference:
        header += [f"p({n}) R", "NLL R"]
    rows = [header + ["stands out"]]
    for row in audit["sequences"]:
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
            *(_sampling_cells(m["sampling"]) if sampled else []),
            *([_exact(m["beam"]["exact"])] if beamed else []),
            _num(m["membership"]["loss"]),
        ]
        if with_reference:
            cells += [_num(r["probabilistic"][0]["chance"][n]), _num(r["membership"]["loss"])]
        rows.append(cells + [{True: "yes", False: "no", None: "-"}[row["stands_out"]]])
    return _columns(rows)


def _exact(hit: bool) -> str:
    return "exact" if hit else "no"


def _sampling_cells(sampling: dict) -> list[str]:
    """The sampling attack: is its best-ranked sample the suffix; the longest verbatim run."""
    return [_exact(sampling["best_exact"]), str(sampling["longest_run"])]


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


def _attack_lines(audit: dict) -> list[str]:
    n = str(audit["settings"]["leak_samples"])
    lines = []
    for spec, attacked in audit["attacks"].items():
        agg = attacked["aggregates"]
        chance = agg["model"]["probabilistic"][0]["mean_chance"][n]
        mia = agg["membership"]
        auc = "" if mia is None else f", Min-K%++ AUC {_num(mia['min_k_pp']['auc_model'])}"
        lines.append(f"after {spec}: {summary_line(agg)}; mean p({n}) {_num(chance)}{auc}")
    return lines


def _legend(audit: dict) -> list[str]:
    """What each column of the per-sequence table holds, for the columns shown."""
    s = audit["settings"]
    n, el_n = s["leak_samples"], s["el_n"]
    scheme = SamplingScheme(**s["schemes"][0]).label()
    rows = [
        ("verdict", "leaked: a test fires under the model and not under the reference;"),
        ("", "as_reference: each test that fires fires under the reference too;"),
        ("", "not_extractable: no test fires"),
        (
            "leaked by",
            f"the tests that fired: greedy_exact, el_{el_n} (above {s['el_max']:.4g}), "
            f"p_{n} (p({n}) >= {s['leak_chance']:g}), sampling_exact, beam_exact",
        ),
        (
            f"EL_{el_n}",
            f"extraction likelihood: the share of the {el_n}-grams greedy decoding writes that "
            f"are in the true text, averaged over prefix lengths ({el_range(s['el_window'])})",
        ),
        (
            "ES",
            "extraction strength: the share of the suffix, counted back from its end, whose "
            "every token is the model's top guess after the true text before it",
        ),
        (
            "log10 p",
            f"log10 of the exact chance that one sample ({scheme}) is the true suffix; "
            "-inf: that scheme cannot write it",
        ),
        (f"p({n})", f"the chance that one of {n} such samples is the suffix, 1 - (1 - p)^{n}"),
    ]
    if s["num_samples"] > 0:
        rows.append(
            (
                "sample, run",
                f"the sampling attack ({s['num_samples']} samples ranked by loss): is the "
                "best-ranked the suffix; the longest run of suffix tokens a sample copied",
            )
        )
    if s["num_beams"] > 0:
        rows.append(("beam", f"beam search ({s['num_beams']} beams) writes the suffix"))
    rows.append(("NLL", "the suffix's negative log-likelihood, nats a token (the LOSS attack)"))
    if audit["aggregates"]["reference"] is not None:
        rows.append(("... R", f"the same under the reference model (p({n}) R, NLL R)"))
    rows.append(
        (
            "stands out",
            f"the suffix's NLL is over {s['stands_out_margin']:g} nats a token above the "
            "reference's and the holdout's: forgotten too well, which a membership test sees",
        )
    )
    # each explanation wrapped under its own, the lines within 100 characters
    return [
        f"{key if i == 0 else '':<12} {part}"
        for key, text in rows
        for i, part in enumerate(textwrap.wrap(text, 87))
    ]


def render(audit: dict) -> str:
    """The table of an audit in its audit.json form, its columns explained under it."""
    lines = _sequence_lines(audit) + [""] + _legend(audit) + [""]
    lines += _membership_lines(audit["aggregates"], audit["settings"]["mia_k"])
    holdout = _holdout_line(audit["aggregates"])
    lines += [holdout] if holdout else []
    lines += _attack_lines(audit)
    lines += ["", summary_line(audit["aggregates"])]
    return "\n".join(lines)
