"""LoRA runs: adapters only are trained, the reference model is the same modules with the
adapters off (no second copy), and the saved model is a merged plain-transformers folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from icu_unlearn import distributed, load_config, unlearn


def _config(scenario, out, **extra):
    settings = {
        "model": scenario["planted_model"],
        "forget": scenario["forget"],
        "analogous.pool": scenario["pool"],
        "prefix_length": 20,
        "lr": 1e-3,
        "batch_size": 2,
        "max_epochs": 2,
        "lora.r": 4,
        "out": out,
        **extra,
    }
    return load_config(None, [f"{k}={v}" for k, v in settings.items()])


def test_lora_icu_trains_adapters_with_no_reference_copy(scenario, tmp_path, monkeypatch):
    real_deepcopy = distributed.copy.deepcopy

    def no_model_copies(obj, *args, **kwargs):
        if isinstance(obj, torch.nn.Module):
            raise AssertionError("a LoRA run must not copy the model for the reference")
        return real_deepcopy(obj, *args, **kwargs)

    monkeypatch.setattr(distributed.copy, "deepcopy", no_model_copies)
    result = unlearn(_config(scenario, tmp_path / "lora"), progress=False)
    manifest = result.manifest
    params = manifest["parameters"]
    assert 0 < params["trainable"] < 0.05 * params["total"]
    assert manifest["original"]["kind"] == "adapters disabled"
    assert manifest["original"]["unchanged"]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in result.epochs)
    # merged: a plain folder, no adapter weights, and not the input model
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    before = load_file(scenario["planted_model"] / "model.safetensors")
    after = load_file(result.model_dir / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before.keys() & after.keys())


def test_lora_adapter_only_output(scenario, tmp_path):
    result = unlearn(
        _config(scenario, tmp_path / "adapter", method="kumpr", **{"lora.save": "adapter"}),
        progress=False,
    )
    files = {p.name for p in result.model_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert "model.safetensors" not in files
    config = json.loads((result.model_dir / "adapter_config.json").read_text())
    assert config["r"] == 4


def test_bad_lora_settings_are_usage_errors():
    from icu_unlearn.errors import UsageError

    with pytest.raises(UsageError, match="lora.save must be"):
        load_config(None, ["lora.save=both"])
    with pytest.raises(UsageError, match="lora.r must be"):
        load_config(None, ["lora.r=-1"])
