"""Every method through `icu-unlearn run` on a tiny model: it trains, it changes the model,
the reference model stays the input, and the output is a plain transformers folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from icu_unlearn.config import load_config
from icu_unlearn.methods import METHODS
from icu_unlearn.models import gpt2_tokenizer, weights_digest
from tests.integration.test_eval_cli import call_cli
from tests.scenario import write_scenario


@pytest.fixture(scope="module")
def base_scenario(tmp_path_factory, data_dir):
    return write_scenario(tmp_path_factory.mktemp("methods"), data_dir, gpt2_tokenizer())


def _run(base_scenario, tmp_path, method, *extra):
    out = tmp_path / method
    proc = call_cli(
        "run",
        "--set",
        f"model={base_scenario['base']}",
        "--set",
        f"forget={base_scenario['forget']}",
        "--set",
        f"analogous.pool={base_scenario['pool']}",
        "--set",
        f"method={method}",
        "--set",
        "prefix_length=20",
        "--set",
        "lr=1e-3",
        "--set",
        "batch_size=2",
        "--set",
        "max_epochs=2",
        "--set",  # the random model memorized nothing: criteria that cannot be met run 2 epochs
        "stop.el_max=-1",
        "--set",  # and IUR would drop every sample of a model that never knew them
        "refinement.enabled=false",
        "--set",
        f"probe.retain={base_scenario['retained']}",
        "--set",  # a random model's MA on them is noise (0.2 to 0 on a repetitive one): watched
        "probe.retain_max_ma_drop=null",
        *extra,
        "--out",
        str(out),
    )
    assert proc.returncode == 3, proc.stderr  # 3: out of epochs before the criteria
    return out


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_end_to_end(base_scenario, tmp_path, method):
    out = _run(base_scenario, tmp_path, method)
    manifest = json.loads((out / "manifest.json").read_text())
    epochs = [json.loads(x) for x in (out / "epochs.jsonl").read_text().splitlines()]
    assert manifest["method"] == method and manifest["epochs"] == len(epochs) == 2
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in epochs)
    assert all(e["steps"] == 2 for e in epochs)  # 4 samples, batch 2
    assert {"retain_el", "retain_ma"} <= set(epochs[0]) and "retain_ma" in manifest["after"]
    # the saved model loads with plain transformers and differs from the input
    AutoModelForCausalLM.from_pretrained(out / "model")
    before = load_file(base_scenario["base"] / "model.safetensors")
    after = load_file(out / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the frozen reference model is still exactly the input model at the end
    if METHODS[method].uses_original(load_config(None, [])):
        base = AutoModelForCausalLM.from_pretrained(base_scenario["base"])
        assert manifest["original"]["sha256"] == weights_digest(base)
        assert manifest["original"]["unchanged"] and manifest["original"]["kind"] == "frozen copy"
    else:
        assert manifest["original"] is None


def test_kumpr_published_setting_makes_one_step_an_epoch(base_scenario, tmp_path):
    out = _run(base_scenario, tmp_path, "kumpr", "--set", "batch_size=all")
    epochs = [json.loads(x) for x in (out / "epochs.jsonl").read_text().splitlines()]
    assert [e["steps"] for e in epochs] == [1, 1]


def test_llmu_and_dpo_train_on_their_own_data(base_scenario, tmp_path):
    """The mismatch and refusal batches reach the loss: their terms are logged."""
    llmu = _run(base_scenario, tmp_path, "llmu")
    dpo = _run(base_scenario, tmp_path, "dpo", "--set", "dpo.refusals=[No idea.]")
    first = [json.loads((d / "epochs.jsonl").read_text().splitlines()[0]) for d in (llmu, dpo)]
    assert first[0]["mismatch"] > 0 and first[0]["kl"] >= 0
    assert "refusal_logratio" in first[1]
