"""ICU on the demo's subjects with and without `stop.token_floor`: does a per-token floor at
the never-planted reference's log-probability end the forgotten records near "never seen"
instead of far below it, and what does it cost the rest of the model?

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/demo_floor.py \
        --planted runs/demo/planted --out runs/demo-floor

Both runs start from one planted SmolLM2-135M (planted here when --planted has none), under
`stop.scope: each` with the reference, at the demo's settings; each result gets its
perplexity, the MA of the planted sequences it keeps, and the audit (no attacks). Every
finished step is kept in --out, so a killed benchmark goes on where it stopped. Writes
benchmarks/results/demo_floor.md.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from demo_scopes import (
    DEMO,
    FORGET,
    HOLDOUT,
    KEEP,
    REFERENCE,
    _audit,
    _cached,
    _keep_ma,
    _perplexity,
    _run,
    _seq_table,
    ppl_cells,
    run_cells,
)

from icu_unlearn.demo import DemoSettings, _plant
from icu_unlearn.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
EACH = {"method": "icu", "stop.scope": "each", "stop.reference": REFERENCE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", default="runs/demo/planted", help="the demo's planted model")
    parser.add_argument("--out", default="runs/demo-floor")
    parser.add_argument("--floors", default="1.0", help="stop.token_floor values, in nats")
    parser.add_argument("--data-dir", default=None, help="the offline data mirror")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    planted = _plant(DemoSettings(data_dir=args.data_dir, progress=False), Path(args.planted))
    runs = {"icu-each": EACH}
    for floor in args.floors.split(","):
        runs[f"icu-each-floor{float(floor):g}"] = EACH | {"stop.token_floor": float(floor)}
    manifests, measured = {}, {}
    for name, overrides in runs.items():
        manifests[name] = _run(name, planted, out, overrides)
        model = str(out / name / "model")
        measured[name] = {
            "ppl": _cached(out / f"{name}.ppl.json", lambda m=model: _perplexity(m)),
            "keep_ma": _cached(out / f"{name}.keep.json", lambda m=model: _keep_ma(m)),
            "audit": _cached(out / f"{name}.audit.json", lambda m=model: _audit(m, [])),
        }
    measured["planted"] = {
        "ppl": _cached(out / "planted.ppl.json", lambda: _perplexity(planted)),
        "keep_ma": _cached(out / "planted.keep.json", lambda: _keep_ma(planted)),
    }
    atomic_write_text(
        ROOT / "benchmarks/results/demo_floor.md", _markdown(manifests, measured, args)
    )


def _markdown(manifests: dict, measured: dict, args) -> str:
    planted = measured["planted"]
    before = next(iter(manifests.values()))["before"]
    lines = [
        "# The demo's ICU run with and without a per-token floor at the reference (`stop.token_floor`)",
        "",
        "Command: `OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python "
        f"benchmarks/demo_floor.py --floors {args.floors}`",
        f"Machine: {platform.processor() or platform.machine()}, 2 CPU cores, torch CPU, one "
        f"thread. SmolLM2-135M with lm-extraction:8_0 planted (the demo's planted model); forget "
        f"{FORGET}, keep {KEEP}; reference {REFERENCE} (the model before planting); audit holdout "
        f"{HOLDOUT}, 20 sampling-attack samples, 2 beams. Both runs: stop.scope each with the "
        "reference, demo settings " + ", ".join(f"{k}={v}" for k, v in DEMO.items()) + ".",
        "",
        "| run | status | epochs | forget mean EL10 / MA | still extractable | mean NLL gap to reference (nats/token) | verdicts (leaked / as ref / not extractable) | stand out | LOSS AUC model / reference | keep MA | Pile ppl | Wikitext ppl |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| planted | – | – | {before['el_10']:.3f} / {before['ma']:.3f} | – | – | – | – | – | "
        f"{planted['keep_ma']:.3f} | {planted['ppl']['pile']:.2f} | {planted['ppl']['wikitext']:.2f} |",
    ]
    for name, m in manifests.items():
        got = measured[name]
        agg = got["audit"]["aggregates"]
        v = agg["verdicts"]
        loss = (agg.get("membership") or {}).get("loss") or {}
        lines.append(
            f"| {name} | {run_cells(m)} | "
            f"{v['leaked']} / {v['as_reference']} / {v['not_extractable']} | {agg['stands_out']} | "
            f"{_auc(loss.get('auc_model'))} / {_auc(loss.get('auc_reference'))} | {got['keep_ma']:.3f} | "
            f"{ppl_cells(got['ppl'], planted['ppl'])} |"
        )
    for name, m in manifests.items():
        lines += ["", f"## {name}: every forgotten sequence at the end", "", *_seq_table(m)]
    return "\n".join(lines) + "\n"


def _auc(value) -> str:
    return "–" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
