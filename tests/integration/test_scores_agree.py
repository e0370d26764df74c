"""`icu-unlearn eval` and `icu-unlearn audit` of a finished run's model give the run's own
EL and MA of every sequence, exactly, and every output names the range of its EL."""

from __future__ import annotations

import json

from icu_unlearn import load_config, unlearn
from icu_unlearn.cli import main
from tests.scenario import PLANTED_IDS


def _uneven_forget_set(scenario, path):
    """The twelve planted sequences with suffixes of 10 to 20 tokens (EL_10 needs 10): two
    batches of the default 8, each padded, so that a scorer that batched otherwise than the
    run could show it."""
    rows = [json.loads(line) for line in scenario["planted"].read_text().splitlines()]
    assert [r["id"] for r in rows] == [str(i) for i in PLANTED_IDS]
    for k, row in enumerate(rows):
        row["suffix_ids"] = row["suffix_ids"][: 20 - (7 * k) % 11]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_and_audit_of_a_runs_model_give_its_el_and_ma(scenario, tmp_path):
    forget = _uneven_forget_set(scenario, tmp_path / "uneven.jsonl")
    out = tmp_path / "run"
    config = load_config(
        None,
        [
            f"model={scenario['planted_model']}",
            f"forget={forget}",
            f"analogous.pool={scenario['pool']}",
            "prefix_length=20",
            "lr=1e-3",
            "batch_size=4",
            "max_epochs=2",
            "audit.enabled=false",
            f"out={out}",
        ],
    )
    result = unlearn(config, progress=False)
    last = [r for r in result.samples if r["epoch"] == result.manifest["epochs"]]
    assert len(last) == 12
    assert result.manifest["el_range"] == "p>=t0"

    model = str(out / "model")
    common = ["--model", model, "--forget", str(forget), "--prefix-length", "20"]
    assert main(["eval", *common, "--out", str(tmp_path / "eval")]) == 0
    assert main(["audit", *common, "--out", str(tmp_path / "audit")]) in (0, 3)
    evaluated = [
        json.loads(line)
        for line in (tmp_path / "eval" / "memorization.jsonl").read_text().splitlines()
    ]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    audited = json.loads((tmp_path / "audit" / "audit.json").read_text())

    # the scores are not degenerate: EL and MA vary from sequence to sequence
    assert len({r["el_10"] for r in last}) > 3 and len({r["ma"] for r in last}) > 3
    assert [r["id"] for r in evaluated] == [r["id"] for r in last]
    for run_row, eval_row, audit_row in zip(last, evaluated, audited["sequences"], strict=True):
        assert audit_row["id"] == run_row["id"]
        assert eval_row["el_10"] == run_row["el_10"] and eval_row["ma"] == run_row["ma"]
        greedy = audit_row["model"]["greedy"]
        assert greedy["el_10"] == run_row["el_10"] and greedy["ma"] == run_row["ma"]
    for key in ("el_10", "ma"):
        assert summary[key] == result.manifest["after"][key]
    assert summary["settings"]["el_range"] == audited["settings"]["el_range"] == "p>=t0"

    # the other range is one flag away, and says so
    assert main(["eval", *common, "--no-el-window", "--out", str(tmp_path / "all")]) == 0
    everything = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert everything["settings"]["el_range"] == "all" and not everything["settings"]["el_window"]
    assert everything["el_10"] != summary["el_10"]
