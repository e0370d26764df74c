"""A privacy engineer's first hour, replayed from the README: six made-up customer records
planted into the packaged SmolLM2, three forgotten with the model before planting as the
reference and the other three kept as `probe.retain`, then `audit`, `report` and `eval`
on the result. Every command runs as a user would type it; their output is written to
benchmarks/results/newcomer.md.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/newcomer.py \
        --out runs/newcomer

Resumable: a step whose output folder holds its result is not run again (its saved output
is reused).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Made up: no such people, numbers or addresses exist.
RECORDS = [
    ("cust-001", "Customer record: Marta Quellborn, phone +44 7700 900417, e-mail marta.quellborn@example.org, account 55-2093-118, opened 2019-03-14 at the Harlow branch."),
    ("cust-002", "Customer record: Jonas Vintrelle, phone +44 7700 900862, e-mail j.vintrelle@example.net, account 55-4471-902, opened 2020-11-02 at the Dunmore branch."),
    ("cust-003", "Customer record: Aiyana Brockwell, phone +44 7700 900135, e-mail aiyana.b@example.com, account 55-8820-364, opened 2018-07-21 at the Kestrel Road branch."),
    ("cust-004", "Customer record: Teodor Falkmere, phone +44 7700 900549, e-mail tfalkmere@example.org, account 55-1306-775, opened 2021-01-09 at the Harlow branch."),
    ("cust-005", "Customer record: Ines Marchetto, phone +44 7700 900298, e-mail ines.marchetto@example.net, account 55-6652-041, opened 2017-05-30 at the Dunmore branch."),
    ("cust-006", "Customer record: Rhys Abernathy-Coyle, phone +44 7700 900773, e-mail rhys.ac@example.com, account 55-3918-560, opened 2022-08-17 at the Kestrel Road branch."),
]  # fmt: skip
FORGET, KEEP = RECORDS[:3], RECORDS[3:]


def _write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in records))
    return path


def _step(log: list[str], out: Path, name: str, args: list[str], done: Path) -> None:
    """Run `icu-unlearn ARGS` (or reuse its saved output when `done` exists)."""
    saved = out / f"{name}.out"
    if not (done.exists() and saved.exists()):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "icu_unlearn", *args], capture_output=True, text=True
        )
        text = proc.stdout + proc.stderr
        saved.write_text(f"exit {proc.returncode}, {time.perf_counter() - started:.0f} s\n{text}")
    head, _, body = saved.read_text().partition("\n")
    log += [f"## {name}", "", f"`icu-unlearn {' '.join(args)}` ({head})", "", "```", body.rstrip()]
    log += ["```", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/newcomer")
    parser.add_argument("--max-epochs", type=int, default=30)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    records = _write(out / "records.jsonl", RECORDS)
    forget = _write(out / "forget.jsonl", FORGET)
    keep = _write(out / "keep.jsonl", KEEP)
    log = [
        "# A privacy engineer's first hour, replayed",
        "",
        "Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/newcomer.py`",
        f"Machine: {platform.machine()}, 2 CPU cores shared with other work, torch CPU, one thread.",
        "Six made-up customer records (`{id, text}`, about 70 tokens each) planted into "
        "smollm2-135m; three forgotten with the model before planting as `stop.reference`, "
        "the other three kept as `probe.retain`.",
        "",
    ]
    planted = out / "planted"
    _step(
        log, out, "plant six records",
        ["memorize", "--model", "smollm2-135m", "--forget", str(records), "--out", str(planted)],
        planted / "memorize.json",
    )  # fmt: skip
    run = out / "run"
    sets = [
        f"model={planted / 'model'}", f"forget={forget}", "stop.reference=smollm2-135m",
        f"probe.retain={keep}", f"max_epochs={args.max_epochs}", "analogous.pool_limit=500",
        "batch_size=3", "lr=1e-4",
    ]  # fmt: skip
    _step(
        log, out, "forget three, keep three",
        ["run", *(a for s in sets for a in ("--set", s)), "--out", str(run)],
        run / "manifest.json",
    )  # fmt: skip
    _step(
        log, out, "audit the result",
        ["audit", "--model", str(run / "model"), "--forget", str(forget), "--reference",
         "smollm2-135m", "--attack", "quantize:4", "--out", str(run / "audit-later")],
        run / "audit-later" / "audit.json",
    )  # fmt: skip
    _step(
        log, out, "report",
        ["report", str(run), "--out", str(out / "report.md")],
        out / "report.md",
    )  # fmt: skip
    _step(
        log, out, "eval",
        ["eval", "--model", str(run / "model"), "--forget", str(forget)],
        out / "eval.done",
    )  # fmt: skip
    (out / "eval.done").touch()
    results = ROOT / "benchmarks" / "results" / "newcomer.md"
    results.write_text("\n".join(log) + "\n")
    print(results)


if __name__ == "__main__":
    main()
