"""Several processes: `accelerate launch` with the shipped DDP config, 2 CPU processes
(gloo), must give the run one process gives at the same effective batch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from icu_unlearn import load_config, unlearn
from icu_unlearn.distributed import _fit_deepspeed_config
from icu_unlearn.errors import UsageError
from tests.conftest import ROOT


def _launch(config_file, *args: str, processes: int = 2, timeout: int = 900):
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "configs" / "accelerate" / config_file),
            "--num_processes",
            str(processes),
            "--main_process_port",
            "29533",
            "-m",
            "icu_unlearn",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def _settings(scenario, **extra) -> dict:
    return {
        "model": str(scenario["planted_model"]),
        "forget": str(scenario["forget"]),
        "analogous.pool": str(scenario["pool"]),
        "prefix_length": 20,
        "lr": 1e-3,
        "batch_size": 2,
        "max_epochs": 6,
        **extra,
    }


needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"
)


def _launch_code(status: str) -> int:
    """What `accelerate launch` exits with: 0, or 1 when the main process exited 3 (a run
    that ended without forgetting every sequence, e.g. out of epochs)."""
    return 0 if status in ("criteria_met", "all_forgotten") else 1


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-process") / "run"
    settings = [f"{k}={v}" for k, v in _settings(scenario).items()]
    return unlearn(load_config(None, [*settings, f"out={out}"]), progress=False)


@pytest.mark.parametrize(
    ("accelerate_config", "kind"),
    [
        ("ddp.yaml", "MULTI_CPU"),
        pytest.param("zero2.yaml", "DEEPSPEED", marks=needs_deepspeed),
        pytest.param("zero3.yaml", "DEEPSPEED", marks=needs_deepspeed),
    ],
)
def test_two_processes_equal_one(scenario, tmp_path, one_process, accelerate_config, kind):
    """Batch 2 over 2 processes (1 sample each; once a removal leaves 3 active samples the
    last step has 1, and the second process joins it with a zero-weight sample) against
    one process: the same removals each epoch, epochs, status and weights. ZeRO-3 shards
    the trained and the reference model and scores in lockstep; ZeRO-2 shards optimizer
    state and gradients; checkpoints are then DeepSpeed's own, per process."""
    config = tmp_path / "run.yaml"
    config.write_text(
        "".join(f"{k}: {v}\n" for k, v in _settings(scenario).items() if "." not in k)
    )
    pool = ["--set", f"analogous.pool={scenario['pool']}"]
    out = tmp_path / "two"
    launched = _launch(accelerate_config, "run", str(config), *pool, "--out", str(out))
    two = json.loads((out / "manifest.json").read_text())
    assert launched.returncode == _launch_code(two["status"]), launched.stderr[-3000:]
    assert launched.stdout.count("status:") == 1  # the main process speaks for both
    # DeepSpeed's shared-memory kernel is neither compiled nor loaded: gloo carries it
    assert "shm_comm" not in launched.stdout + launched.stderr
    one = one_process
    assert two["processes"]["count"] == 2 and two["processes"]["distributed_type"] == kind
    assert one.manifest["processes"]["count"] == 1
    assert two["status"] == one.status and two["epochs"] == one.manifest["epochs"]
    assert two["active_at_end"] == one.manifest["active_at_end"]
    epochs_two = _rows(out / "epochs.jsonl")
    assert [e["removed"] for e in epochs_two] == [e["removed"] for e in one.epochs]
    assert sum(e["removed"] for e in one.epochs) > 0  # IUR had decisions to agree on
    for a, b in zip(one.epochs, epochs_two, strict=True):
        assert a["active"] == b["active"] and a["steps"] == b["steps"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    # the per-sample log holds every sample once per epoch, gathered from both processes
    samples_two = _rows(out / "samples.jsonl")
    assert [(r["epoch"], r["id"]) for r in samples_two] == [
        (r["epoch"], r["id"]) for r in one.samples
    ]
    first = load_file(one.model_dir / "model.safetensors")
    second = load_file(out / "model" / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=1e-4, atol=2e-5)


def test_resume_on_two_processes_of_a_one_process_run(scenario, tmp_path):
    """Checkpoints do not depend on the number of processes: 2 epochs on one process,
    then --resume on two, ends where 4 epochs on one process end."""
    settings = _settings(scenario, max_epochs=2)
    pairs = [f"{k}={v}" for k, v in settings.items()]
    unlearn(
        load_config(None, [*pairs, f"out={tmp_path / 'part'}"]),
        progress=False,
        keep_checkpoints=True,
    )
    config = tmp_path / "run.yaml"
    config.write_text(
        "".join(f"{k}: {v}\n" for k, v in (settings | {"max_epochs": 4}).items() if "." not in k)
    )
    resumed = _launch(
        "ddp.yaml",
        "run",
        str(config),
        "--set",
        f"analogous.pool={scenario['pool']}",
        "--out",
        str(tmp_path / "part"),
        "--resume",
    )
    status = json.loads((tmp_path / "part" / "manifest.json").read_text())["status"]
    assert resumed.returncode == _launch_code(status), resumed.stderr[-3000:]
    whole = unlearn(
        load_config(None, [*pairs, "max_epochs=4", f"out={tmp_path / 'whole'}"]), progress=False
    )
    epochs = _rows(tmp_path / "part" / "epochs.jsonl")
    assert [e["removed"] for e in epochs] == [e["removed"] for e in whole.epochs]
    first = load_file(whole.model_dir / "model.safetensors")
    second = load_file(tmp_path / "part" / "model" / "model.safetensors")
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=1e-4, atol=1e-5)


def test_fsdp_on_a_machine_without_gpus_is_refused(scenario, tmp_path):
    """accelerate quietly runs plain DDP when FSDP has no GPU; the run says so and stops."""
    config = tmp_path / "run.yaml"
    config.write_text(
        "".join(f"{k}: {v}\n" for k, v in _settings(scenario).items() if "." not in k)
    )
    out = tmp_path / "fsdp"
    proc = _launch("fsdp.yaml", "run", str(config), "--out", str(out), processes=1)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("icu-unlearn: error:")]
    assert len(errors) == 1 and "asked for FSDP" in errors[0], proc.stderr[-2000:]
    assert not out.exists()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"optimizer": {"type": "AdamW", "params": {"lr": 1e-5}}}, "optimizer section"),
        ({"scheduler": {"type": "WarmupLR"}}, "scheduler section"),
        ({"train_batch_size": 16}, "train_batch_size 16"),
        ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu 8"),
        ({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps 4"),
    ],
)
def test_a_deepspeed_config_never_overrides_the_run(given, message):
    with pytest.raises(UsageError, match=message):
        _fit_deepspeed_config(dict(given), batch_size=8, grad_accum=2, world=2)


def test_a_deepspeed_config_that_agrees_is_filled_in():
    ds = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": 2,  # 8 / (2 x 2): the run's own value
        "gradient_accumulation_steps": 2,
        "zero_optimization": {"stage": 2},
    }
    _fit_deepspeed_config(ds, batch_size=8, grad_accum=2, world=2)
    # the loop micro-batches and scales losses itself; DeepSpeed's numbers only agree
    assert ds["train_batch_size"] == 2 and ds["gradient_accumulation_steps"] == 1
    assert ds["gradient_clipping"] == 0.0


@pytest.mark.parametrize(
    "extra",
    [
        {"method": "npo"},
        {"method": "kumpr", "batch_size": "all"},
        {"method": "icu", "refinement.num_beams": 2},
        # and each step's gradient taken at the relearning shift (a sign of the summed
        # gradients of both processes' shares)
        {
            "method": "icu",
            "probe.retain": "RETAINED",
            "probe.retain_max_ma_drop": "null",
            "relearn_step": 1e-4,
        },
    ],
    ids=["npo", "kumpr-all", "icu-beam-iur", "icu-retain-term-relearn-step"],
)
def test_other_methods_on_two_processes_equal_one(scenario, tmp_path, extra):
    """The loop is the methods' one: a reference-model method (NPO), KUMPR's one step an
    epoch, and ICU whose IUR check regenerates with beam search (each process its share)
    split over 2 processes give one process's losses, checks and weights; so does the
    retain term on kept records (each process the kept records of its forget samples), with
    the relearning shift of `relearn_step`."""
    extra = {k: str(scenario["retained"]) if v == "RETAINED" else v for k, v in extra.items()}
    settings = _settings(scenario, max_epochs=2, **extra)
    config = tmp_path / "run.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in settings.items() if "." not in k))
    dotted = [x for k, v in settings.items() if "." in k for x in ("--set", f"{k}={v}")]
    out = tmp_path / "two"
    launched = _launch("ddp.yaml", "run", str(config), *dotted, "--out", str(out))
    status = json.loads((out / "manifest.json").read_text())["status"]
    assert launched.returncode == _launch_code(status), launched.stderr[-3000:]
    pairs = [f"{k}={v}" for k, v in settings.items()]
    one = unlearn(load_config(None, [*pairs, f"out={tmp_path / 'one'}"]), progress=False)
    epochs = _rows(out / "epochs.jsonl")
    assert [e["steps"] for e in epochs] == [e["steps"] for e in one.epochs]
    for a, b in zip(one.epochs, epochs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
        assert a["removed"] == b["removed"]
        if "probe.retain" in extra:
            assert a["kept_kl"] == pytest.approx(b["kept_kl"], rel=1e-4, abs=1e-6)
    if "refinement.num_beams" in extra:  # the beam check's own scores, from both processes
        rows = [r for r in _rows(out / "samples.jsonl") if r["epoch"] > 0 and r["active"]]
        expected = [r for r in one.samples if r["epoch"] > 0 and r["active"]]
        assert len(rows) == len(expected) > 0
        for a, b in zip(expected, rows, strict=True):
            assert a["id"] == b["id"] and a["iur_generation"] == b["iur_generation"]
            assert a["iur_bertscore_f1"] == pytest.approx(b["iur_bertscore_f1"], abs=1e-6)
    first = load_file(one.model_dir / "model.safetensors")
    second = load_file(out / "model" / "model.safetensors")
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=1e-4, atol=2e-5)
