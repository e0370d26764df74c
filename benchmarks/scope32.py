"""Every sequence against the mean: the CPU protocol's 32 planted sequences, ICU under
`stop.scope: each` with the never-planted SmolLM2 as the reference, beside the committed
`mean` run (benchmarks/results/cpu_protocol_report.md), sequence by sequence.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/cpu_protocol.py \
        --forget lm-extraction:32_0 --keep lm-extraction:8_1 --methods icu --tasks pile,wikitext \
        --limit 40 --max-epochs 20 --el-window --set stop.reference=smollm2-135m \
        --set stop.scope=each --out runs/cpu32each
    .venv/bin/python benchmarks/scope32.py --each runs/cpu32each

The `mean` run's per-sequence end values are read from its committed report (its run
folder is not kept); its utility from benchmarks/results/cpu_protocol.md.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--each", required=True, help="the cpu_protocol.py --out of the each run")
    parser.add_argument("--out", default=str(RESULTS / "scope32.md"))
    args = parser.parse_args()
    each = Path(args.each)
    run = each / "icu"
    manifest = json.loads((run / "manifest.json").read_text())
    epochs = [json.loads(x) for x in (run / "epochs.jsonl").read_text().splitlines()]
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    final = {r["id"]: r for r in samples if r["epoch"] == manifest["epochs"]}
    reference = manifest["reference_scores"]
    mean_rows = _mean_run_rows(RESULTS / "cpu_protocol_report.md")
    limits = manifest["thresholds"]
    utility = {
        "each": _ppl(json.loads((run / "utility.json").read_text())),
        "planted": _ppl(json.loads((each / "planted" / "utility.json").read_text())),
        "mean": _mean_run_ppl(RESULTS / "cpu_protocol.md"),
    }
    minutes = sum(e.get("seconds", 0.0) for e in epochs) / 60
    retained = [e["retain_ma"] for e in epochs if "retain_ma" in e]
    lines = [
        "# 32 planted sequences: every sequence (`each` + reference) against the mean rule\n",
        f"Each run: `{manifest['status']}` after {manifest['epochs']} epochs "
        f"({minutes:.0f} min of epochs on this 2-core CPU, one thread, beside other jobs); "
        f"mean run: `criteria_met` after 10 epochs (committed, "
        "benchmarks/results/cpu_protocol.md). Thresholds EL10 < "
        f"{limits['el_max']:.4f}, MA < {limits['ma_max']:.4f}, EL over prefix lengths >= t0. "
        f"Reference: the never-planted SmolLM2-135M. Mean suffix-NLL gap to the reference at "
        f"the end: {manifest['likelihood_vs_reference']['mean_gap']:+.2f} nats a token.\n",
        "| | Pile PPL | Wikitext PPL | kept MA (8 planted, not forgotten) |",
        "|---|---|---|---|",
        f"| planted | {utility['planted'][0]:.2f} | {utility['planted'][1]:.2f} | "
        f"{manifest['before']['retain_ma']:.4f} |",
        f"| mean (paper's rule; its own planting) | {utility['mean'][0]:.2f} | "
        f"{utility['mean'][1]:.2f} | {utility['mean'][2]} |",
        f"| each + reference | {utility['each'][0]:.2f} | {utility['each'][1]:.2f} | "
        f"{retained[-1]:.4f} |"
        if retained
        else "| each + reference | – | – | – |",
        "",
        "| id | mean: EL10 / MA at the end | each: EL10 / MA | each: done | each: suffix NLL "
        "| reference EL10 / MA / NLL |",
        "|---|---|---|---|---|---|",
    ]
    for sid, r in final.items():
        ref = reference[sid]
        m = mean_rows.get(sid)
        shown = f"{m[0]:.3f} / {m[1]:.3f}" if m else "–"
        flag = (
            " **(extractable)**"
            if m and not (m[0] < limits["el_max"] and m[1] < limits["ma_max"])
            else ""
        )
        lines.append(
            f"| {sid} | {shown}{flag} | {r['el_10']:.3f} / {r['ma']:.3f} | {r['done'] or 'NOT DONE'} "
            f"| {r['suffix_nll']:.2f} | {ref['el_10']:.3f} / {ref['ma']:.3f} / {ref['suffix_nll']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


def _mean_run_rows(report: Path) -> dict[str, tuple[float, float]]:
    """id -> (EL, MA) after, from the ICU section of the committed report."""
    text = report.read_text()
    section = text.split("## icu (icu): before / after generations", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 3 and re.fullmatch(r"\d+", cells[0]):
            rows[cells[0]] = (float(cells[2].split("→")[1]), float(cells[3].split("→")[1]))
    return rows


def _mean_run_ppl(table: Path) -> tuple[float, float, str]:
    for line in table.read_text().splitlines():
        if line.startswith("| icu | icu |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            return float(cells[-2]), float(cells[-1]), cells[8].split("→")[1].strip()
    raise SystemExit(f"no ICU row in {table}")


def _ppl(utility: dict) -> tuple[float, float]:
    return utility["tasks"]["pile"]["value"], utility["tasks"]["wikitext"]["value"]


if __name__ == "__main__":
    main()
