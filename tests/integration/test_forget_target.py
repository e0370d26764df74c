"""The forget target (`forget_target`) on the tiny planted scenario: the reference target
ends each record where a model that never saw it is, where ascent overshoots; the
calibrated target, without a reference, keeps the kept records; bad set-ups refused."""

from __future__ import annotations

import pytest

from icu_unlearn import load_config, unlearn
from tests.integration.test_eval_cli import call_cli

# lr 1e-3: the rate of the tiny scenario (12 planted, 4 forgotten)
COMMON = {"lr": 1e-3, "batch_size": 4, "prefix_length": 20, "audit.enabled": "false"}


def _config(scenario, out, **extra):
    keys = {
        "model": scenario["planted_model"],
        "forget": scenario["forget"],
        "analogous.pool": scenario["pool"],
        "out": out,
        **COMMON,
        **extra,
    }
    return load_config(None, [f"{k}={v}" for k, v in keys.items()])


def _final(result) -> dict:
    return {r["id"]: r for r in result.samples if r["epoch"] == result.manifest["epochs"]}


def test_the_calibrated_target_pulls_each_suffix_toward_never_seen_text(scenario, tmp_path):
    """No reference: each forgotten suffix is pulled to the holdout's median NLL under the
    model (about 13 nats a token for this tiny planted model, from under 1): after 8
    epochs every suffix is on its way there (the slowest, measured: 0.03 -> 0.41) and none
    has gone past it far enough to stand out. (tests/unit/test_forget_target.py holds the reference target to the reference's
    NLL and MA where ascent overshoots.)"""
    config = _config(
        scenario, tmp_path / "run", forget_target="calibrated", max_epochs=8,
        **{"audit.holdout": scenario["heldout"]},
    )  # fmt: skip
    result = unlearn(config, progress=False)
    level = result.manifest["thresholds"]["holdout_nll"]
    start = {r["id"]: r["suffix_nll"] for r in result.samples if r["epoch"] == 0}
    final = _final(result)
    assert level > 5.0 and all(nll < 2.0 for nll in start.values())
    for i, r in final.items():
        assert r["suffix_nll"] > start[i] + 0.3, (i, r["suffix_nll"], start[i])
        assert r["suffix_nll"] <= level + 2.0 and not r["stands_out"], r


@pytest.mark.parametrize(
    "keys, message",
    [
        (["forget_target=reference"], "needs stop.reference"),
        (["forget_target=calibrated"], "needs audit.holdout"),
        (["forget_target=reference", "method=dpo", "stop.reference={base}"], "dpo has not"),
    ],
)
def test_a_target_without_its_inputs_is_refused(scenario, tmp_path, keys, message, capfd):
    out = tmp_path / "run"
    sets = [
        f"model={scenario['planted_model']}", f"forget={scenario['forget']}",
        "prefix_length=20", *(k.format(base=scenario["base"]) for k in keys),
    ]  # fmt: skip
    proc = call_cli("run", *(a for s in sets for a in ("--set", s)), "--out", str(out), capfd=capfd)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and not out.exists()


def test_a_reference_with_another_tokenizer_is_refused(scenario, tmp_path):
    """A tiny model with its own 64-token vocabulary as stop.reference."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import tiny_llama

    other = tmp_path / "other"
    tiny_llama().save_pretrained(other)
    vocab = {f"t{i}": i for i in range(64)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="t2", pad_token="t0").save_pretrained(
        other
    )
    out = tmp_path / "run"
    sets = [
        f"model={scenario['planted_model']}", f"forget={scenario['forget']}", "prefix_length=20",
        f"stop.reference={other}",
    ]  # fmt: skip
    proc = call_cli("run", *(a for s in sets for a in ("--set", s)), "--out", str(out))
    assert proc.returncode == 2 and "another tokenizer" in proc.stderr, proc.stderr
    assert not out.exists()


def test_the_retain_term_holds_the_kept_records(scenario, tmp_path):
    """Ascent (no reference, no holdout) forgets every one of the 4 while the retain term
    holds the 8 kept records named in probe.retain (measured: kept MA 0.994 -> 0.95;
    watched only, 0.75). Before the first step the model is the input model: the term
    is ~0."""
    keys = {"probe.retain": scenario["retained"], "probe.retain_max_ma_drop": "null"}
    held = unlearn(_config(scenario, tmp_path / "held", max_epochs=30, **keys), progress=False)
    assert held.status == "criteria_met" and held.manifest["still_extractable"] == []
    assert held.epochs[0]["kept_kl"] < 1e-3  # one step an epoch: epoch 1's is the first
    assert held.manifest["before"]["retain_ma"] > 0.95
    assert held.manifest["after"]["retain_ma"] >= 0.9, held.manifest["after"]
    last = held.manifest["epochs"]
    keys["probe.retain_weight"] = 0
    watched = unlearn(
        _config(scenario, tmp_path / "watched", max_epochs=last, **keys), progress=False
    )
    assert "kept_kl" not in watched.epochs[0]
    end = watched.manifest["epochs"]  # it may forget sooner, unheld
    at_end = [next(e["retain_ma"] for e in r.epochs if e["epoch"] == end) for r in (held, watched)]
    assert at_end[0] > at_end[1] + 0.1, at_end
