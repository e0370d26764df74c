"""Planting runs through the one training loop: several processes plant what one plants,
and a killed planting resumes to the same model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from tests.integration.test_distributed import _launch
from tests.integration.test_eval_cli import call_cli, run_cli


def _plant_args(scenario, out, epochs: int = 6) -> list[str]:
    return [
        "memorize",
        "--model",
        str(scenario["base"]),
        "--forget",
        str(scenario["forget"]),
        "--out",
        str(out),
        "--lr",
        "1e-2",
        "--max-epochs",
        str(epochs),
        "--batch-size",
        "4",
        "--prefix-length",
        "20",
        "--target-ma",
        "1.0",  # out of reach in 6 epochs: every planting trains the same number of epochs
    ]


def _weights(out):
    return load_file(out / "model" / "model.safetensors")


def _assert_same_weights(a, b, rtol=1e-5, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def one_process_planting(scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("plant-one") / "planting"
    proc = call_cli(*_plant_args(scenario, out))
    assert proc.returncode == 3, proc.stderr  # 3: the target MA was not reached
    assert "did NOT reach" in proc.stdout
    return out


def test_planting_on_two_processes_equals_one(scenario, one_process_planting, tmp_path):
    out = tmp_path / "planting"
    launched = _launch("ddp.yaml", *_plant_args(scenario, out))
    assert launched.returncode == 1, launched.stderr  # accelerate's code for a child's 3
    # all-reduced gradients sum in another order: the distributed tests' tolerance
    _assert_same_weights(_weights(one_process_planting), _weights(out), rtol=1e-4, atol=2e-5)
    one = json.loads((one_process_planting / "memorize.json").read_text())
    two = json.loads((out / "memorize.json").read_text())
    assert one["epochs"] == two["epochs"] == 6
    assert one["ma"] == pytest.approx(two["ma"], abs=0.03)  # one position of 39 may flip
    # it trained: the weights left the base model's
    base = load_file(scenario["base"] / "model.safetensors")
    assert any(not torch.equal(base[k], _weights(out)[k]) for k in base)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["processes"]["count"] == 2 and manifest["method"] == "memorize"


def test_a_killed_planting_resumes_to_the_same_model(scenario, one_process_planting, tmp_path):
    out = tmp_path / "planting"
    killed = run_cli(*_plant_args(scenario, out), env={"ICU_UNLEARN_FAULT": "train_step:3"})
    assert killed.returncode == -9 and not (out / "model").exists()
    resumed = call_cli(*_plant_args(scenario, out), "--resume")
    assert resumed.returncode == 3, resumed.stderr
    _assert_same_weights(_weights(one_process_planting), _weights(out))
    one = json.loads((one_process_planting / "memorize.json").read_text())
    again = json.loads((out / "memorize.json").read_text())
    assert one["ma"] == again["ma"] and one["history"] == again["history"]


def test_a_planting_run_directory_loads_as_its_model(scenario, one_process_planting):
    """`--model DIR` of a run or planting directory means its model/ folder."""
    proc = call_cli(
        "eval",
        "--model",
        str(one_process_planting),
        "--forget",
        str(scenario["forget"]),
        "--prefix-length",
        "20",
    )
    assert proc.returncode == 0, proc.stderr


def test_plant_reads_an_ended_planting_resumes_a_killed_one_and_refuses_others(
    scenario, tmp_path, monkeypatch
):
    """What the demo and the benchmarks plant with (`memorize.plant`, `finish_run` for
    plantings): planted once, read (not planted again) once it ended, even by a version
    whose config has keys the planting's lacks, resumed after a kill; a planting with
    other settings there is refused, or planted over when asked."""
    import yaml

    from icu_unlearn import memorize as module
    from icu_unlearn.errors import UsageError

    calls, real = [], module.unlearn

    def keeping(config, resume=False, overwrite=False, progress=True):
        calls.append("resume" if resume else "overwrite" if overwrite else "start")
        return real(config, resume, overwrite, progress, keep_checkpoints=True)

    monkeypatch.setattr(module, "unlearn", keeping)
    out = tmp_path / "planting"
    settings = module.MemorizeSettings(
        str(scenario["base"]), str(scenario["forget"]), str(out), lr=1e-2, max_epochs=2,
        batch_size=4, prefix_length=20, target_ma=1.0,
    )  # fmt: skip
    first = module.plant(settings)
    assert calls == ["overwrite"] and first["epochs"] == 2 and not first["reached"]
    assert module.plant(settings) == first and calls == ["overwrite"]
    # made by a version without a key this one has: still this planting, read as it is
    config = out / "config.yaml"
    recorded = yaml.safe_load(config.read_text())
    del recorded["prefix_weight"], recorded["eval"]["verify"]
    config.write_text(yaml.safe_dump(recorded))
    assert module.plant(settings) == first and calls == ["overwrite"]
    # but a resume compares every key: put back, then killed after its last checkpoint
    module.plant(replace(settings, lr=2e-2), replace=True)  # over it, then back again
    assert calls == ["overwrite", "overwrite"]
    module.plant(settings, replace=True)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(manifest | {"status": "running"}))
    again = module.plant(settings)
    assert calls == ["overwrite", "overwrite", "overwrite", "resume"]
    assert again["ma"] == first["ma"] and again["history"] == first["history"]
    with pytest.raises(UsageError, match="holds a planting made with other settings"):
        module.plant(replace(settings, lr=5e-3))
    assert len(calls) == 4 and module.planted_with(replace(settings, lr=5e-3)) is None
