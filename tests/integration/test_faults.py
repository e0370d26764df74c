"""Killed runs: SIGKILL at several points (mid-epoch, during the IUR check, half-way through
a checkpoint write) and SIGINT, then --resume, must end exactly like an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from icu_unlearn import checkpoint
from tests.conftest import ROOT
from tests.integration.test_eval_cli import call_cli, run_cli


def _args(scenario, out):
    settings = [
        f"model={scenario['planted_model']}",
        f"forget={scenario['forget']}",
        f"analogous.pool={scenario['pool']}",
        "prefix_length=20",
        "lr=2e-4",
        "alpha=1.0",
        "beta=3.0",
        "batch_size=2",
        "max_epochs=4",
    ]
    return ["run", *(a for s in settings for a in ("--set", s)), "--out", str(out)]


def _final(out):
    manifest = json.loads((out / "manifest.json").read_text())
    epochs = [json.loads(x) for x in (out / "epochs.jsonl").read_text().splitlines()]
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    untimed = [{k: v for k, v in e.items() if not k.endswith("seconds")} for e in epochs]
    return manifest, untimed, samples, load_file(out / "model" / "model.safetensors")


def _code(out) -> int:
    """The exit code a finished run in `out` must have given: 3 when it ended without
    forgetting every sequence (out of epochs), 0 otherwise."""
    status = json.loads((out / "manifest.json").read_text())["status"]
    return 3 if status in ("incomplete", "diverged") else 0


@pytest.fixture(scope="module")
def uninterrupted(scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "whole"
    proc = call_cli(*_args(scenario, out))
    assert proc.returncode == _code(out), proc.stderr
    return _final(out)


def _assert_same(a, b):
    manifest_a, epochs_a, samples_a, weights_a = a
    manifest_b, epochs_b, samples_b, weights_b = b
    assert manifest_a["status"] == manifest_b["status"]
    assert manifest_a["active_at_end"] == manifest_b["active_at_end"]
    assert epochs_a == epochs_b and samples_a == samples_b
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], rtol=1e-5, atol=1e-6)


def test_a_killed_run_resumed_with_fewer_epochs_finishes_at_its_checkpoint(scenario, tmp_path):
    """Killed in epoch 3 of 4, then resumed with max_epochs=2: the run ends at once as
    incomplete (out of epochs) with the epoch-2 checkpoint's weights, and trains no further."""
    out = tmp_path / "cut"
    killed = run_cli(*_args(scenario, out), env={"ICU_UNLEARN_FAULT": "train_step:3"})
    assert killed.returncode == -signal.SIGKILL
    survivor = checkpoint.latest(out / "checkpoints")
    assert survivor.name == "epoch-2"
    saved = load_file(survivor / "model.safetensors")
    args = _args(scenario, out)
    args[args.index("max_epochs=4")] = "max_epochs=2"
    resumed = call_cli(*args, "--resume")
    assert resumed.returncode == 3, resumed.stderr
    manifest, epochs, _, weights = _final(out)
    assert manifest["status"] == "incomplete" and manifest["epochs"] == 2 and len(epochs) == 2
    assert saved.keys() & weights.keys()
    for key in saved.keys() & weights.keys():  # a tied head is stored once in the model
        torch.testing.assert_close(weights[key], saved[key], rtol=0, atol=0)


@pytest.mark.parametrize("point", ["train_step:2", "iur_check:2", "checkpoint_write:3"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(scenario, uninterrupted, tmp_path, point):
    out = tmp_path / "killed"
    killed = run_cli(*_args(scenario, out), env={"ICU_UNLEARN_FAULT": point})
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "model").exists()  # nothing that looks finished
    # the checkpoint that survives is the last whole one; a half-written one never loads
    survivor = checkpoint.latest(out / "checkpoints")
    epoch = int(point.split(":")[1])
    assert survivor.name == f"epoch-{epoch - 1}"
    if point.startswith("checkpoint_write"):
        partial = [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
        assert partial and not (partial[0] / "state.json").exists()
    resumed = call_cli(*_args(scenario, out), "--resume")
    assert resumed.returncode == _code(out), resumed.stderr
    _assert_same(uninterrupted, _final(out))


def test_sigint_stops_cleanly_and_resumes(scenario, uninterrupted, tmp_path):
    out = tmp_path / "interrupted"
    # SIGINT in epoch 2, at a known point: a tiny run can finish before a signal sent from
    # outside lands
    proc = subprocess.run(
        [sys.executable, "-m", "icu_unlearn", *_args(scenario, out)],
        env=os.environ | {"PYTHONPATH": str(ROOT), "ICU_UNLEARN_FAULT": "train_step:2:sigint"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        # a job started in the background (`cmd &`) inherits SIGINT ignored, and Python
        # then raises no KeyboardInterrupt: give the run the default, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    stderr = proc.stderr
    assert proc.returncode == 130, stderr
    assert "continue with --resume" in stderr and "Traceback" not in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    resumed = call_cli(*_args(scenario, out), "--resume")
    assert resumed.returncode == _code(out), resumed.stderr
    _assert_same(uninterrupted, _final(out))
