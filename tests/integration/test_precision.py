"""`precision: bf16` for run, eval and audit on the planted tiny model: autocast computes,
the weights stay float32, and the scores stay within bf16's rounding of fp32's."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from icu_unlearn import evaluate, load_config, unlearn
from icu_unlearn.audit import AuditSettings, audit
from icu_unlearn.cli import main
from icu_unlearn.evaluate import EvalSettings


def _run(scenario, out, precision: str):
    config = load_config(
        None,
        [
            f"model={scenario['planted_model']}",
            f"forget={scenario['forget']}",
            f"analogous.pool={scenario['pool']}",
            "prefix_length=20",
            "lr=1e-3",
            "batch_size=4",
            "max_epochs=2",
            "audit.enabled=false",
            f"precision={precision}",
            f"out={out}",
        ],
    )
    return unlearn(config, progress=False)


def test_a_bf16_run_trains_float32_weights_with_finite_losses(scenario, tmp_path):
    fp32 = _run(scenario, tmp_path / "fp32", "fp32")
    bf16 = _run(scenario, tmp_path / "bf16", "bf16")
    assert [e["epoch"] for e in bf16.epochs] == [1, 2]
    for name in ("loss", "fgt", "lrn", "kl"):
        ours = [e[name] for e in bf16.epochs]
        assert all(math.isfinite(v) for v in ours), (name, ours)
    # autocast ran: the first step's loss moved by bf16's rounding, no further
    first, first_fp32 = bf16.epochs[0]["loss"], fp32.epochs[0]["loss"]
    assert first != first_fp32 and first == pytest.approx(first_fp32, rel=0.05, abs=0.05)
    weights = load_file(bf16.model_dir / "model.safetensors")
    before = load_file(scenario["planted_model"] / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    assert any(not torch.equal(weights[k], before[k]) for k in weights)  # it trained
    saved = (bf16.out / "config.yaml").read_text()
    assert "precision: bf16" in saved


def test_bf16_eval_and_audit_agree_and_stay_near_fp32(scenario):
    """On the memorized sequences (MA >= 0.9) bf16 moves a few argmaxes at most: MA within
    0.1 of fp32's per sequence, the mean within 0.05; eval and audit, both bf16, agree."""
    spec = str(scenario["planted"])
    model = str(scenario["planted_model"])
    fp32 = evaluate(model, spec, prefix_length=20).samples
    bf16 = evaluate(model, spec, prefix_length=20, settings=EvalSettings(precision="bf16"))
    assert bf16.settings["precision"] == "bf16"
    assert len(fp32) == len(bf16.samples) == 12
    for a, b in zip(fp32, bf16.samples, strict=True):
        assert abs(a["ma"] - b["ma"]) <= 0.1 and abs(a["el_10"] - b["el_10"]) <= 0.2, (a, b)
    mean = sum(r["ma"] for r in fp32) / 12
    assert abs(sum(r["ma"] for r in bf16.samples) / 12 - mean) <= 0.05
    audited = audit(model, spec, prefix_length=20, settings=AuditSettings(precision="bf16"))
    for row, seq in zip(bf16.samples, audited.sequences, strict=True):
        greedy = seq["model"]["greedy"]
        assert (greedy["ma"], greedy["el_10"]) == (row["ma"], row["el_10"])
    assert audited.settings["precision"] == "bf16"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--set", "model=m", "--set", "forget=f", "--set", "precision=fp16"],
        ["eval", "--model", "m", "--forget", "f", "--precision", "fp16"],
        ["audit", "--model", "m", "--forget", "f", "--precision", "fp16"],
        ["memorize", "--model", "m", "--forget", "f", "--precision", "fp16"],
        ["demo", "--precision", "fp16"],
    ],
)
def test_a_bad_precision_is_one_line_exit_2(argv, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("icu-unlearn: error: "), lines
    allowed = "fp32, bf16 or auto" if argv[0] == "demo" else "fp32 or bf16"
    assert f"must be {allowed}, got 'fp16'" in lines[0]
    assert not (tmp_path / "out").exists()
