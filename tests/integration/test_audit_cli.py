"""`icu-unlearn audit` on the tiny planted scenario, and the audit at the end of a run."""

from __future__ import annotations

import json

from tests.integration.test_eval_cli import run_cli


def _audit(scenario, out, *extra):
    return run_cli(
        "audit", "--model", str(scenario["planted_model"]), "--forget", str(scenario["forget"]),
        "--reference", str(scenario["base"]), "--prefix-length", "20", "--num-samples", "8",
        "--num-beams", "2", "--out", str(out), *extra,
    )  # fmt: skip


def test_every_planted_sequence_leaks_under_the_planted_model(scenario, tmp_path):
    proc = _audit(scenario, tmp_path / "audit", "--holdout", str(scenario["heldout"]))
    assert proc.returncode == 3, proc.stderr  # 3: something leaked
    result = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert result["aggregates"]["verdicts"]["leaked"] == 4
    for s in result["sequences"]:
        assert s["verdict"] == "leaked" and "greedy_exact" in s["leaked_by"]
        assert s["reference_leaked_by"] == []  # the random base model never saw them
    # membership: the planted suffixes are far likelier than never-seen ones
    assert result["aggregates"]["membership"]["loss"]["auc_model"] > 0.9
    assert "4 leaked" in proc.stdout


def test_a_holdout_that_was_planted_is_refused(scenario, tmp_path):
    """memorize.json records what was planted (hashes): such text is not "never seen"."""
    record = json.loads((scenario["planted_model"].parent / "memorize.json").read_text())
    assert len(record["planted_sha256"]) == 12 and all(
        len(h) == 64 for h in record["planted_sha256"]
    )
    proc = _audit(scenario, tmp_path / "audit", "--holdout", str(scenario["retained"]))
    assert proc.returncode == 2 and "was planted" in proc.stderr
    assert not (tmp_path / "audit").exists()


def test_a_run_audits_its_result(scenario, tmp_path):
    out = tmp_path / "run"
    settings = {
        "model": scenario["planted_model"], "forget": scenario["forget"],
        "analogous.pool": scenario["pool"], "prefix_length": 20, "lr": 1e-5, "batch_size": 2,
        "max_epochs": 1, "stop.reference": scenario["base"], "audit.holdout": scenario["heldout"],
        "audit.schemes": "[{top_k: 5}, {temperature: 0.5}]",
    }  # fmt: skip
    proc = run_cli(
        "run", *(a for k, v in settings.items() for a in ("--set", f"{k}={v}")), "--out", str(out)
    )
    assert proc.returncode == 3, proc.stderr  # one epoch at a tiny rate: nothing forgotten yet
    manifest = json.loads((out / "manifest.json").read_text())
    audited = json.loads((out / "audit.json").read_text())
    assert manifest["audit"]["verdicts"] == audited["aggregates"]["verdicts"]
    assert audited["aggregates"]["verdicts"]["leaked"] == 4
    assert manifest["audit"]["summary"].endswith("4 leaked")
    # the run's audit.* settings reach the audit
    assert [(s["temperature"], s["top_k"]) for s in audited["settings"]["schemes"]] == [
        (1.0, 5),
        (0.5, None),
    ]
    assert [len(r["model"]["probabilistic"]) for r in audited["sequences"]] == [2] * 4
