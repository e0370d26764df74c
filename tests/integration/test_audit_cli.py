"""`icu-unlearn audit` on the tiny planted scenario, and the audit at the end of a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.integration.test_eval_cli import call_cli


def _audit(scenario, out, *extra, env=None):
    return call_cli(
        "audit", "--model", str(scenario["planted_model"]), "--forget", str(scenario["forget"]),
        "--reference", str(scenario["base"]), "--prefix-length", "20", "--attack", "sample:8",
        "--attack", "beam:2", "--out", str(out), *extra, env=env,
    )  # fmt: skip


def test_every_planted_sequence_leaks_under_the_planted_model(scenario, tmp_path):
    env = {"ICU_CACHE_DIR": str(tmp_path / "cache")}
    proc = _audit(scenario, tmp_path / "audit", "--holdout", str(scenario["heldout"]), env=env)
    assert proc.returncode == 3, proc.stderr  # 3: something leaked
    assert "from the cache" not in proc.stderr
    result = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert result["settings"]["num_samples"] == 8 and result["settings"]["num_beams"] == 2
    assert result["aggregates"]["verdicts"]["leaked"] == 4
    for s in result["sequences"]:
        assert s["verdict"] == "leaked" and "greedy_exact" in s["leaked_by"]
        assert s["reference_leaked_by"] == []  # the random base model never saw them
    # membership: the planted suffixes are far likelier than never-seen ones
    assert result["aggregates"]["membership"]["loss"]["auc_model"] > 0.9
    assert "4 leaked" in proc.stdout
    # again: the reference's measurements come from the cache, and the audit is the same
    again = _audit(scenario, tmp_path / "again", "--holdout", str(scenario["heldout"]), env=env)
    assert again.returncode == 3, again.stderr
    assert "reference model: forget measurements from the cache" in again.stderr
    repeated = json.loads((tmp_path / "again" / "audit.json").read_text())
    for data in (result, repeated):
        del data["settings"]["seconds"]
    assert repeated == result


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
    proc = call_cli(
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


def test_bitsandbytes_is_imported_by_a_bnb_attack_only(scenario, tmp_path):
    """Importing bitsandbytes costs seconds and, on some CPUs, prints a kernel-download
    warning: the audit's modules and an audit without a bnb attack never import it."""
    args = [
        "audit", "--model", str(scenario["planted_model"]), "--forget", str(scenario["forget"]),
        "--reference", str(scenario["base"]), "--prefix-length", "20", "--attack", "sample:2",
        "--attack", "beam:2", "--attack", "quantize:4", "--el-n", "2",
    ]  # fmt: skip
    code = (
        "import sys, icu_unlearn.audit, icu_unlearn.audit.api, icu_unlearn.audit.attacks, "
        "icu_unlearn.audit.cache, icu_unlearn.audit_settings, icu_unlearn.cli\n"
        "assert 'bitsandbytes' not in sys.modules, 'imported by the modules'\n"
        f"code = icu_unlearn.cli.main({args!r})\n"
        "print('exit', code, 'bitsandbytes' in sys.modules)\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT), "ICU_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "exit 3 False" in proc.stdout  # audited (the planted sequences leak), no bitsandbytes
