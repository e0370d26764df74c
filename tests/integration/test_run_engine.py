"""The ICU engine end to end on a tiny model: memorize, forget a third, keep the rest."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from icu_unlearn import evaluate, load_config, unlearn
from icu_unlearn.errors import UsageError
from icu_unlearn.evaluate import EvalSettings
from icu_unlearn.report import load_run, markdown_table
from tests.integration.test_eval_cli import call_cli, run_cli, third_party_lines
from tests.run_logs import scored_alike, without_times


def _digest(folder) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_icu_forgets_a_third_and_keeps_the_rest(scenario, tmp_path):
    """Measured: forget-set MA 0.987 -> < 0.5994 and EL_10 0.98 -> < 0.0499 (criteria met,
    ~35 epochs); MA on the 8 planted sequences not asked to be forgotten 0.987 -> 0.913."""
    out = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {scenario['planted_model']}\nforget: {scenario['forget']}\n"
        # lr 3e-4: at 2e-4 IUR removed every sample (epoch 56) before the means met the
        # criteria with transformers 5.25 (the same at the commit before this test's last
        # change); at 3e-4 the criteria are met at epoch 44
        f"prefix_length: 20\nlr: 3.0e-4\nalpha: 1.0\nbeta: 3.0\nbatch_size: 4\nmax_epochs: 60\n"
        f"analogous:\n  pool: {scenario['pool']}\n"
        # the paper's rule on the means: tests/integration/test_per_sequence.py holds `each`
        "stop:\n  scope: mean\n"
    )
    before = _digest(scenario["planted_model"])
    retained_before = evaluate(
        str(scenario["planted_model"]), str(scenario["retained"]), prefix_length=20
    ).summary["ma"]
    proc = call_cli("run", str(config), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "criteria_met"
    assert manifest["before"]["ma"] > 0.9 and manifest["before"]["el_10"] > 0.5
    assert manifest["after"]["ma"] < 0.5994 and manifest["after"]["el_10"] < 0.0499
    retained_after = evaluate(
        str(out / "model"), str(scenario["retained"]), prefix_length=20
    ).summary["ma"]
    assert retained_after >= retained_before - 0.10, (retained_before, retained_after)
    # outputs: plain-transformers model, logs, pairs; the input model untouched
    assert _digest(scenario["planted_model"]) == before
    AutoModelForCausalLM.from_pretrained(out / "model")
    epochs = [json.loads(x) for x in (out / "epochs.jsonl").read_text().splitlines()]
    assert len(epochs) == manifest["epochs"] and {"fgt", "lrn", "kl", "active"} <= set(epochs[0])
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * (manifest["epochs"] + 1)
    pairs = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 4 and all(p["similarity"] <= 0.9 for p in pairs)
    assert "status: criteria_met" in proc.stdout


def _config(scenario, out, **extra):
    overrides = [
        f"model={scenario['planted_model']}",
        f"forget={scenario['forget']}",
        f"analogous.pool={scenario['pool']}",
        "prefix_length=20",
        "lr=1e-5",
        "batch_size=2",
        f"out={out}",
        *(f"{k}={v}" for k, v in extra.items()),
    ]
    return load_config(None, overrides)


def test_resume_equals_an_uninterrupted_run(scenario, tmp_path):
    whole = unlearn(_config(scenario, tmp_path / "whole", max_epochs=3), progress=False)
    part = unlearn(
        _config(scenario, tmp_path / "part", max_epochs=2), progress=False, keep_checkpoints=True
    )
    assert part.manifest["epochs"] == 2
    # max_epochs may grow on resume; any other setting is refused before anything is written
    with pytest.raises(UsageError, match="the config differs"):
        unlearn(_config(scenario, tmp_path / "part", max_epochs=3, lr=5e-4), resume=True)
    resumed = unlearn(
        _config(scenario, tmp_path / "part", max_epochs=3), resume=True, progress=False
    )
    assert whole.status == resumed.status == "incomplete"
    assert whole.manifest["active_at_end"] == resumed.manifest["active_at_end"]
    # part's last epoch (2) scored everything; whole's epoch 2 only what could decide
    scored_alike(without_times(whole.epochs), without_times(resumed.epochs))
    scored_alike(whole.samples, resumed.samples)
    a = load_file(whole.model_dir / "model.safetensors")
    b = load_file(resumed.model_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # and the run really trained: weights moved away from the input
    base = load_file(scenario["planted_model"] / "model.safetensors")
    assert any(not torch.equal(base[k], a[k]) for k in base)


def test_finish_run_reads_an_ended_run_and_resumes_a_killed_one(scenario, tmp_path, monkeypatch):
    """What the benchmarks run their configurations with: a run is started once, read
    (not run again) once it ended, and resumed from its checkpoint after a kill."""
    from icu_unlearn import train

    resumed, real = [], train.unlearn

    def recording(config, resume=False, overwrite=False, progress=True):
        resumed.append(resume)
        return real(config, resume, overwrite, progress, keep_checkpoints=True)

    monkeypatch.setattr(train, "unlearn", recording)
    config = _config(scenario, tmp_path / "run", max_epochs=2)
    ended = train.finish_run(config)
    assert resumed == [False] and ended["status"] == "incomplete" and ended["epochs"] == 2
    assert train.finish_run(config) == ended and resumed == [False]
    # ended under a version whose config lacked a key this one has: read as it is
    saved = tmp_path / "run" / "config.yaml"
    text = saved.read_text()
    assert "\nprefix_weight: " in text
    saved.write_text("".join(x for x in text.splitlines(True) if not x.startswith("prefix_weight")))
    assert train.finish_run(config) == ended and resumed == [False]
    saved.write_text(text)
    # killed after its last checkpoint: the manifest still says "running"
    manifest = tmp_path / "run" / "manifest.json"
    manifest.write_text(json.dumps(ended | {"status": "running"}))
    again = train.finish_run(config)
    assert resumed == [False, True] and again["status"] == "incomplete"
    assert again["epochs"] == 2 and json.loads(manifest.read_text())["status"] == "incomplete"
    # another config over that folder is refused, not answered with the old run's manifest
    with pytest.raises(UsageError, match="ended with another config"):
        train.finish_run(_config(scenario, tmp_path / "run", max_epochs=2, lr=5e-4))
    assert resumed == [False, True]


def test_a_used_run_directory_is_refused(scenario, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    proc = call_cli(
        "run",
        "--set",
        f"model={scenario['base']}",
        "--set",
        f"forget={scenario['forget']}",
        "--out",
        str(out),
    )
    assert proc.returncode == 2 and "already holds files" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_a_finished_run_removes_its_checkpoints_and_says_so_on_resume(scenario, tmp_path):
    """checkpoints/ (weights and optimizer state) goes when a run ends, out of epochs here;
    --resume of that run is then one line. The command prints nothing of the libraries it
    loads (before: bitsandbytes' "Failed to load CPU gemm_4bit_forward from
    kernels-community" through peft, DeepSpeed's "Setting accelerator to CPU" through
    save_pretrained)."""
    out = tmp_path / "finished"
    args = [
        "run",
        *("--set", f"model={scenario['planted_model']}"),
        *("--set", f"forget={scenario['forget']}"),
        *("--set", f"analogous.pool={scenario['pool']}"),
        *("--set", "prefix_length=20", "--set", "max_epochs=1"),
        *("--out", str(out)),
    ]
    proc = run_cli(*args)
    assert proc.returncode == 3, proc.stderr  # one epoch is too few: incomplete
    assert (out / "model").is_dir() and not (out / "checkpoints").exists()
    assert third_party_lines(proc) == []
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 2
    assert resumed.stderr.splitlines() == [
        f"icu-unlearn: error: nothing to resume in {out}: the run finished and its checkpoints "
        "were removed; to extend a run later, start it with --keep-checkpoints"
    ]
    kept = tmp_path / "kept"
    proc = call_cli(*args[:-1], str(kept), "--keep-checkpoints")
    assert proc.returncode == 3 and (kept / "checkpoints" / "LATEST").is_file()


def test_methods_lists_the_registry():
    proc = call_cli("methods")
    assert proc.returncode == 0 and proc.stdout.startswith("icu ")


def test_non_finite_loss_stops_and_keeps_the_last_good_model(scenario, tmp_path, monkeypatch):
    from icu_unlearn.methods import METHODS, icu

    calls = {"n": 0}

    def exploding(model, reference, batches, config):
        calls["n"] += 1
        loss, terms = icu.METHOD.loss(model, reference, batches, config)
        return (loss * float("nan"), terms) if calls["n"] > 2 else (loss, terms)

    monkeypatch.setitem(
        METHODS, "icu", icu.METHOD.__class__(**{**icu.METHOD.__dict__, "loss": exploding})
    )
    result = unlearn(
        _config(scenario, tmp_path / "nan", max_epochs=5), progress=False, keep_checkpoints=True
    )
    assert result.status == "diverged" and result.manifest["epochs"] == 1
    assert "loss became nan at epoch 2" in result.epochs[-1]["diverged"]
    kept = load_file(result.model_dir / "model.safetensors")
    epoch1 = load_file(tmp_path / "nan" / "checkpoints" / "epoch-1" / "model.safetensors")
    shared = kept.keys() & epoch1.keys()  # tied embeddings are stored under one name
    assert shared
    for key in shared:
        torch.testing.assert_close(kept[key], epoch1[key])


def test_exploding_heldout_perplexity_stops_and_keeps_the_input_model(scenario, tmp_path):
    """A learning rate that wrecks the model in one epoch: perplexity on held-out text
    jumps past 1.5x, the run stops as diverged, and the saved model is the input model."""
    result = unlearn(
        _config(
            scenario,
            tmp_path / "ppl",
            lr=0.05,
            max_epochs=3,
            **{
                "probe.heldout": str(scenario["heldout"]),
                "probe.max_perplexity_ratio": 1.5,
            },
        ),
        progress=False,
    )
    assert result.status == "diverged" and result.manifest["epochs"] == 0
    assert "held-out perplexity" in result.epochs[-1]["diverged"]
    assert result.manifest["active_at_end"] == ["100", "101", "102", "103"]
    kept = load_file(result.model_dir / "model.safetensors")
    original = load_file(scenario["planted_model"] / "model.safetensors")
    for key in kept.keys() & original.keys():
        torch.testing.assert_close(kept[key], original[key])


def test_auto_thresholds_are_the_models_own_heldout_means(scenario, tmp_path):
    result = unlearn(
        _config(
            scenario,
            tmp_path / "auto",
            max_epochs=1,
            **{"stop.thresholds": "auto", "stop.heldout": "lm-extraction:ids=300-303"},
        ),
        progress=False,
    )
    expected = evaluate(str(scenario["planted_model"]), "lm-extraction:ids=300-303").summary
    assert result.manifest["thresholds"]["source"].startswith("auto")
    assert result.manifest["thresholds"]["el_max"] == pytest.approx(expected["el_10"])
    assert result.manifest["thresholds"]["ma_max"] == pytest.approx(expected["ma"])


def test_verifying_last_epochs_continuations_changes_nothing(scenario, tmp_path):
    """A run that verifies last epoch's continuations (the default) and one that decodes
    every one afresh (`eval.verify: false`) log the same scores and decisions and end
    with bit-identical weights; the drafts are in the checkpoint (resume verifies the
    same ones), and left out of it under `redact`."""
    runs = {
        verify: unlearn(
            _config(scenario, tmp_path / f"verify-{verify}", max_epochs=4, lr="2e-3",
                    **{"eval.verify": str(verify).lower(), "probe.retain": scenario["retained"],
                       "probe.retain_max_ma_drop": "null"}),
            progress=False,
            keep_checkpoints=True,
        )
        for verify in (True, False)
    }  # fmt: skip
    verified, plain = runs[True], runs[False]
    assert without_times(verified.epochs) == without_times(plain.epochs)
    assert verified.samples == plain.samples
    a = load_file(verified.model_dir / "model.safetensors")
    b = load_file(plain.model_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the run really forgot something between epochs: the continuations changed
    ids = {r["id"] for r in verified.samples}
    changed = [i for i in ids if len({r["ma"] for r in verified.samples if r["id"] == i}) > 1]
    assert len(changed) == len(ids)

    def drafts(run):
        state = json.loads((run.model_dir.parent / "checkpoints" / "epoch-4" / "state.json")
                           .read_text())  # fmt: skip
        return state["drafts"]

    assert drafts(plain) == {}
    saved = drafts(verified)
    # the kept records' too: their scores each epoch (epochs.jsonl, `retain`) came out equal
    kept = {json.loads(line)["id"] for line in scenario["retained"].read_text().splitlines()}
    assert set(saved) == {r["id"] for r in verified.samples} | kept
    assert all("retain" in e for e in verified.epochs)
    assert all(len(c) == 40 - int(q) for d in saved.values() for q, c in d.items())
    redacted = unlearn(
        _config(scenario, tmp_path / "redacted", max_epochs=1, redact="true"),
        progress=False,
        keep_checkpoints=True,
    )
    state = json.loads((redacted.model_dir.parent / "checkpoints" / "epoch-1" / "state.json")
                       .read_text())  # fmt: skip
    assert state["drafts"] == {}


def test_gradient_accumulation_does_not_change_the_run(scenario, tmp_path):
    """Batch 4 in one step equals batch 4 as 2 x 2 and 4 x 1 micro-batches: same losses,
    same removals, same weights (float tolerance); the loss is a per-sample mean."""
    results = [
        unlearn(
            _config(scenario, tmp_path / f"accum{k}", batch_size=4, grad_accum=k, max_epochs=2),
            progress=False,
        )
        for k in (1, 2, 4)
    ]
    first = load_file(results[0].model_dir / "model.safetensors")
    for other in results[1:]:
        assert other.manifest["active_at_end"] == results[0].manifest["active_at_end"]
        for a, b in zip(results[0].epochs, other.epochs, strict=True):
            assert a["removed"] == b["removed"] and a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        weights = load_file(other.model_dir / "model.safetensors")
        for key in first:
            torch.testing.assert_close(first[key], weights[key], rtol=1e-4, atol=1e-6)


def test_el_window_scores_prefix_lengths_from_t0_in_the_run_and_its_thresholds(scenario, tmp_path):
    """`stop.el_window: true` makes every EL of a run (forget set, auto thresholds) the
    window variant, as `eval --el-window` computes it, and the report says so."""
    result = unlearn(
        _config(
            scenario,
            tmp_path / "window",
            max_epochs=1,
            **{
                "stop.el_window": "true",
                "stop.thresholds": "auto",
                "stop.heldout": "lm-extraction:ids=300-303",
            },
        ),
        progress=False,
    )
    window = EvalSettings(el_window=True)
    heldout = evaluate(str(scenario["planted_model"]), "lm-extraction:ids=300-303", settings=window)
    forget = evaluate(
        str(scenario["planted_model"]), str(scenario["forget"]), settings=window, prefix_length=20
    )
    full = evaluate(
        str(scenario["planted_model"]),
        str(scenario["forget"]),
        settings=EvalSettings(el_window=False),
        prefix_length=20,
    )
    assert result.manifest["thresholds"]["el_max"] == pytest.approx(heldout.summary["el_10"])
    assert result.manifest["before"]["el_10"] == pytest.approx(forget.summary["el_10"])
    assert forget.summary["el_10"] != pytest.approx(full.summary["el_10"])
    assert "EL10 (p>=t0)" in markdown_table([load_run(result.out)])
