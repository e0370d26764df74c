"""`icu-unlearn launch`: 2 CPU processes (the shipped DDP config, gloo) keep the run's exit
code, where `accelerate launch` turns every failure into 1 (test_distributed.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def _launch(entry: list[str], *command: str, port: int) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    options = [
        "--config_file", str(ROOT / "configs" / "accelerate" / "ddp.yaml"),
        "--num_processes", "2", "--main_process_port", str(port),
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", *entry, *options, "--", *command],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )


def _sets(scenario, **extra) -> list[str]:
    settings = {
        "model": scenario["planted_model"], "forget": scenario["forget"],
        "analogous.pool": scenario["pool"], "prefix_length": 20, "lr": 1e-5, "batch_size": 2,
        "max_epochs": 1, "audit.enabled": "false", **extra,
    }  # fmt: skip
    return [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]


def test_an_incomplete_run_exits_3_on_two_processes(scenario, tmp_path):
    """One epoch at a tiny rate forgets nothing: `incomplete`, 3 from both processes."""
    out = tmp_path / "run"
    proc = _launch(
        ["icu_unlearn", "launch"], "run", *_sets(scenario), "--out", str(out), port=29541
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["processes"]["count"] == 2
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "icu-unlearn launch: exit 3 (rank 0: exit 3" in proc.stderr


def test_bad_input_exits_2_on_two_processes(scenario, tmp_path):
    """A config key that does not exist: refused by each process before anything runs."""
    out = tmp_path / "run"
    sets = _sets(scenario, no_such_key=1)
    proc = _launch(["icu_unlearn.launch"], "run", *sets, "--out", str(out), port=29542)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("icu-unlearn: error:")]
    assert len(errors) == 1 and "no_such_key" in errors[0]  # the main process says it once
    assert not out.exists()
