"""Quantization attacks on the demo's subjects: the simulated round-to-nearest 4-bit
(`quantize:4`) against bitsandbytes' own NF4 (`bnb:4`) and LLM.int8() (`bnb:8`), on the
planted model and on an unlearned one, with the never-planted model as the reference.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/audit_quantize.py \
        --model planted=runs/demo/planted/model --model icu-each=runs/demo-scopes/icu-each/model

Each audit is kept in --out, so a killed benchmark goes on where it stopped. Writes
benchmarks/results/audit_quantize.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from icu_unlearn.audit import AuditSettings, audit
from icu_unlearn.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
FORGET = "lm-extraction:ids=1670,13379,10234,4719"  # the demo's forget set
HOLDOUT = "lm-extraction:8_1"  # never planted
REFERENCE = "smollm2-135m"  # the model before planting
ATTACKS = ("quantize:4", "bnb:4", "bnb:8")


def _audit(name: str, model: str, out: Path) -> dict:
    path = out / name / "audit.json"
    if not path.is_file():
        started = time.perf_counter()
        audit(
            model,
            FORGET,
            holdout=HOLDOUT,
            reference=REFERENCE,
            settings=AuditSettings(el_window=True),
            out=out / name,
            attacks=ATTACKS,
        )
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return json.loads(path.read_text())


def _row(name: str, attack: str, part: dict, reference: list[float]) -> str:
    sequences = part["sequences"]
    verdicts = part["aggregates"]["verdicts"]
    nll = [s["model"]["membership"]["loss"] for s in sequences]
    ma = [s["model"]["greedy"]["ma"] for s in sequences]
    el = [s["model"]["greedy"]["el_10"] for s in sequences]
    p100 = [s["model"]["probabilistic"][0]["chance"]["100"] for s in sequences]
    return (
        f"| {name} | {attack} | {verdicts['leaked']} / {verdicts['as_reference']} / "
        f"{verdicts['not_extractable']} | {sum(el) / len(el):.3f} | {sum(ma) / len(ma):.3f} | "
        f"{sum(p100) / len(p100):.3g} | {sum(nll) / len(nll):.2f} | "
        f"{sum(reference) / len(reference):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--out", default="runs/audit-quantize")
    args = parser.parse_args()
    out = Path(args.out)
    audits = {}
    for item in args.model:
        name, folder = item.split("=", 1)
        audits[name] = _audit(name, folder, out)
    lines = [
        "# Quantization attacks: simulated 4-bit against bitsandbytes' NF4 and LLM.int8()",
        "",
        f"Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/audit_quantize.py {' '.join('--model ' + m for m in args.model)}`  ",
        f"Machine: {platform.machine()}, {platform.system()}, CPU only, torch {torch.__version__}, "
        "one thread",
        "",
        f"Forget set {FORGET} (the demo's), holdout {HOLDOUT}, reference {REFERENCE} (never "
        "planted). The cheap audit (greedy, exact extraction probability under T=1 top-k 40, "
        "membership) after each attack; `quantize:4` is round-to-nearest in groups of 128, "
        "`bnb:4` NF4 in blocks of 64, `bnb:8` LLM.int8(), the output head unquantized in all.",
        "",
        "| model | attack | leaked / as reference / not extractable | mean EL10 | mean MA | "
        "mean p(100) | mean suffix NLL | reference NLL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in audits.items():
        reference = [s["reference"]["membership"]["loss"] for s in result["sequences"]]
        lines.append(_row(name, "none", result, reference))
        for attack in ATTACKS:
            lines.append(_row(name, attack, result["attacks"][attack], reference))
    lines.append("")
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "audit_quantize.md", "\n".join(lines))
    atomic_write_json(
        RESULTS / "audit_quantize.json",
        {
            name: {"aggregates": r["aggregates"], "attacks": r["attacks"]}
            for name, r in audits.items()
        },
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
