"""Every sequence forgotten on its own (`stop.scope: each`), a never-trained reference
model, and an honest ending: on the tiny planted scenario."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from icu_unlearn import criteria, evaluate, load_config, methods, unlearn
from icu_unlearn.evaluate import EvalSettings
from tests.integration.test_eval_cli import call_cli
from tests.run_logs import scored_alike, without_times

STRONG = {"lr": 2e-4, "alpha": 1.0, "beta": 3.0, "batch_size": 4}


def _config(scenario, out, **extra):
    keys = {
        "model": scenario["planted_model"],
        "forget": scenario["forget"],
        "analogous.pool": scenario["pool"],
        "prefix_length": 20,
        "out": out,
        **extra,
    }
    return load_config(None, [f"{k}={v}" for k, v in keys.items()])


def _final_rows(result):
    return [r for r in result.samples if r["epoch"] == result.manifest["epochs"]]


def test_each_forgets_every_sequence_on_its_own(scenario, tmp_path):
    # lr 3e-4: at STRONG's 2e-4 one sequence was still extractable after 60 epochs with
    # transformers 5.25 (the same at the commit before this change); 3e-4: done at epoch 47
    keys = STRONG | {"lr": 3e-4}
    result = unlearn(_config(scenario, tmp_path / "run", max_epochs=60, **keys), progress=False)
    assert result.status == "criteria_met" and result.manifest["still_extractable"] == []
    limits = result.manifest["thresholds"]
    for r in _final_rows(result):  # every one, not the mean
        assert r["el_10"] < limits["el_max"] and r["ma"] < limits["ma_max"], r
        assert r["done"] == "criteria"
    # a done sequence leaves training: the active count follows the per-sequence decisions
    for epoch in result.epochs:
        rows = [r for r in result.samples if r["epoch"] == epoch["epoch"]]
        assert epoch["done"] == sum(1 for r in rows if r["done"])
    # the 8 planted sequences not asked to be forgotten keep most of their memory: no
    # reference and no holdout here, so the forget term is the paper's ascent (measured:
    # kept MA 0.994 -> 0.872; at lr 1e-3 with the default alpha, beta and batch 0.75)
    kept = {
        model: evaluate(str(model), str(scenario["retained"]), prefix_length=20).summary["ma"]
        for model in (scenario["planted_model"], result.model_dir)
    }
    assert kept[scenario["planted_model"]] > 0.95 and kept[result.model_dir] >= 0.8, kept


@pytest.fixture(scope="module")
def reference_model(scenario, tmp_path_factory):
    """The base model with only the first forget sequence planted: a reference that never
    saw the other three, and reproduces the first as well as the planted model does."""
    root = tmp_path_factory.mktemp("reference")
    first = scenario["forget"].read_text().splitlines()[0]
    (root / "first.jsonl").write_text(first + "\n")
    proc = call_cli(
        "memorize", "--model", str(scenario["base"]), "--forget", str(root / "first.jsonl"),
        "--out", str(root / "planting"), "--lr", "1e-2", "--max-epochs", "300",
        # every token: at MA 0.97 one wrong suffix token left its EL at 0.27, not the
        # planted model's 1.0, and "as well as the planted model" did not hold
        "--target-ma", "1.0",
        "--batch-size", "1", "--prefix-length", "20",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return root / "planting" / "model", json.loads(first)["id"]


def test_a_sequence_the_reference_reproduces_ends_done_by_the_reference_rule(
    scenario, reference_model, tmp_path
):
    model, known = reference_model
    config = _config(
        scenario, tmp_path / "run", max_epochs=60, **STRONG,
        # the paper's ascent, which this rule was built for (the reference target: the
        # forget_target tests)
        **{"stop.reference": model, "stop.reference_margin": 0.3, "forget_target": "ascent"},
        # this reference, a tiny model trained hard on one sequence, gives the others ~24
        # nats a token, a likelihood no run need reach, and ascent drags the known one far
        # below its 0.34: this test is the EL/MA rule's, the likelihood band is opened wide
        **{"stop.reference_nll_margin": 30.0, "audit.stands_out_margin": 100.0},
    )  # fmt: skip
    result = unlearn(config, progress=False)
    assert result.status == "criteria_met"
    scores = result.manifest["reference_scores"]
    assert scores[known]["ma"] > 0.9 and all(v["ma"] < 0.5 for k, v in scores.items() if k != known)
    final = {r["id"]: r for r in _final_rows(result)}
    # it left training once it was no more extractable than under the reference
    assert final[known]["done"] == "reference"
    assert all(final[i]["done"] == "criteria" for i in final if i != known)
    gaps = result.manifest["likelihood_vs_reference"]
    assert set(gaps["per_sequence"]) == set(final)
    assert gaps["mean_gap"] == pytest.approx(
        sum(g["gap"] for g in gaps["per_sequence"].values()) / len(final)
    )


def test_too_few_epochs_end_incomplete_with_exit_code_3_and_the_ids(scenario, tmp_path):
    out = tmp_path / "run"
    args = [f"{k}={v}" for k, v in {"lr": 1e-5, "batch_size": 2, "max_epochs": 1}.items()]
    proc = call_cli(
        "run", "--set", f"model={scenario['planted_model']}", "--set", f"forget={scenario['forget']}",
        "--set", f"analogous.pool={scenario['pool']}", "--set", "prefix_length=20",
        *(a for s in args for a in ("--set", s)), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete"
    left = manifest["still_extractable"]
    assert len(left) == 4 and all(r["ma"] > 0.5994 for r in left)
    assert "status: incomplete" in proc.stdout
    assert all(f"  {r['id']}: EL" in proc.stdout for r in left)
    # per record: how many tokens are prompt and how many are tested, and its continuation
    assert "record  prompt  tested" in proc.stdout and "continuation after" in proc.stdout
    assert all(re.search(rf"\n{r['id']} +20 +20 ", proc.stdout) for r in left)


def test_auto_thresholds_on_training_rows_differ_from_those_on_validation_text(scenario):
    """The planted model's own training rows give memorized-level thresholds; the default
    held-out set, Pile validation text, gives the model's level on text it never saw."""
    from icu_unlearn.distributed import Processes, make_accelerator
    from icu_unlearn.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(scenario["planted_model"]))
    procs = Processes(make_accelerator())
    settings = EvalSettings(el_window=True)
    found = {}
    for heldout in (str(scenario["retained"]), "pile-validation:8"):
        config = _config(scenario, "x", **{"stop.thresholds": "auto", "stop.heldout": heldout})
        found[heldout] = criteria.thresholds(config, model, tokenizer, [], settings, procs)
    own, validation = found[str(scenario["retained"])], found["pile-validation:8"]
    assert own["ma_max"] > 0.9 and validation["ma_max"] < 0.3
    assert own["el_max"] > validation["el_max"] + 0.5


@pytest.mark.parametrize("method", ["llmu", "dpo"])
def test_redraws_are_deterministic_across_resume(scenario, tmp_path, method):
    whole = unlearn(
        _config(scenario, tmp_path / "whole", method=method, max_epochs=3), progress=False
    )
    part = unlearn(
        _config(scenario, tmp_path / "part", method=method, max_epochs=2),
        progress=False,
        keep_checkpoints=True,
    )
    resumed = unlearn(
        _config(scenario, tmp_path / "part", method=method, max_epochs=3), resume=True,
        progress=False,
    )  # fmt: skip
    assert part.manifest["epochs"] == 2 and whole.status == resumed.status
    # part's last epoch (2) scored all EL; whole's epoch 2 only what could decide
    scored_alike(without_times(whole.epochs), without_times(resumed.epochs))
    scored_alike(whole.samples, resumed.samples)
    a = load_file(whole.model_dir / "model.safetensors")
    b = load_file(resumed.model_dir / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dropout", [False, True])
def test_dropout_is_off_in_training_unless_asked(scenario, tmp_path, monkeypatch, dropout):
    seen = []
    kumpr = methods.METHODS["kumpr"]

    def loss(model, reference, batches, config):
        seen.append(model.training)
        return kumpr.loss(model, reference, batches, config)

    monkeypatch.setitem(
        methods.METHODS, "kumpr", methods.base.Method(**{**kumpr.__dict__, "loss": loss})
    )
    config = _config(
        scenario, tmp_path / "run", method="kumpr", max_epochs=1, dropout=str(dropout).lower()
    )
    unlearn(config, progress=False)
    assert seen and set(seen) == {dropout}


@pytest.mark.parametrize("scope", ["each", "mean"])
def test_lazy_el_gives_the_run_of_the_full_schedule(scenario, reference_model, tmp_path, scope):
    """EL only where it can decide (the default) and EL everywhere every epoch
    (`log.el_every_epoch`): the same decisions every epoch, the same rows apart from the
    EL values the lazy run skipped, the same final model; and the lazy run did skip."""
    extra = {**STRONG, "lr": 1e-3, "max_epochs": 6, "stop.scope": scope}
    if scope == "each":  # the reference rule's reach decides what is scored too
        extra |= {"stop.reference": reference_model[0], "stop.reference_margin": 0.3}
    runs = {
        every: unlearn(
            _config(scenario, tmp_path / str(every), **extra, **{"log.el_every_epoch": every}),
            progress=False,
        )
        for every in ("false", "true")
    }
    lazy, full = runs["false"], runs["true"]
    # out of epochs before every sequence is done: the last epoch scores everything
    assert lazy.status == full.status == "incomplete"
    assert lazy.manifest["epochs"] == full.manifest["epochs"] == 6
    if scope == "each":  # the reference rule decided, on a sequence whose MA is over ma_max
        done = [r for r in lazy.samples if r["done"] == "reference" and r["ma"] >= 0.5994]
        assert done and all(r["el_10"] is not None for r in done)
    skipped = 0
    for a, b in zip(lazy.samples, full.samples, strict=True):
        if a["el_10"] is None:  # skipped: its MA could not pass, so EL decided nothing
            skipped += 1
            a = a | {"el_10": b["el_10"]}
            if scope == "mean":  # a row's own `done` is a record under mean, not a decision
                a, b = a | {"done": None}, b | {"done": None}
        assert a == b
    assert skipped > 0
    # skipped values apart, the epoch logs agree: active sets, removals, readmissions, probes
    derived = {"el", "el_scored"} | ({"done"} if scope == "mean" else set())
    for a, b in zip(lazy.epochs, full.epochs, strict=True):
        assert a["el_scored"] <= b["el_scored"] == len(scenario_ids(full))
        assert a["el"] is None or a["el"] == b["el"]
        keep = {k for k in b if "seconds" not in k and k not in derived}
        assert {k: a[k] for k in keep} == {k: b[k] for k in keep}
    # every result holds every score: the last epoch is scored whole
    assert lazy.epochs[-1]["el"] == pytest.approx(full.epochs[-1]["el"])
    assert lazy.manifest["after"] == full.manifest["after"]
    a = load_file(lazy.model_dir / "model.safetensors")
    b = load_file(full.model_dir / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def scenario_ids(result) -> set[str]:
    return {r["id"] for r in result.samples if r["epoch"] == 0}


def test_activation_checkpointing_gives_the_same_run(scenario, tmp_path):
    """`activation_checkpointing: true` (dropout off) trades compute for memory only: the
    same epochs and, to float tolerance, the same weights as the plain run."""
    runs = [
        unlearn(
            _config(
                scenario,
                tmp_path / flag,
                **STRONG,
                max_epochs=2,
                activation_checkpointing=flag,
            ),
            progress=False,
        )  # fmt: skip
        for flag in ("false", "true")
    ]
    plain, checkpointed = runs
    untimed = [[{k: v for k, v in e.items() if "seconds" not in k} for e in r.epochs] for r in runs]
    assert untimed[0] == untimed[1]
    a = load_file(plain.model_dir / "model.safetensors")
    b = load_file(checkpointed.model_dir / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def _ascent_batches(monkeypatch, name: str) -> list:
    """Every forget batch the method `name` trains on, as the loss receives it."""
    seen = []
    method = methods.METHODS[name]

    def loss(model, reference, batches, config):
        seen.append(batches["forget"])
        return method.loss(model, reference, batches, config)

    monkeypatch.setitem(
        methods.METHODS, name, methods.base.Method(**{**method.__dict__, "loss": loss})
    )
    return seen


def test_the_token_floor_is_the_references_log_probability_less_the_margin(
    scenario, tmp_path, monkeypatch
):
    """Each forget batch carries, per predicted token, the never-trained reference's own
    log-probability of it (teacher-forced, measured once) less stop.token_floor."""
    from icu_unlearn.models import load_model_and_tokenizer
    from icu_unlearn.scoring import teacher_forced

    seen = _ascent_batches(monkeypatch, "kumpr")
    reference = str(scenario["base"])
    config = _config(
        scenario, tmp_path / "run", method="kumpr", max_epochs=1, batch_size=2,
        **{"stop.reference": reference, "stop.token_floor": 0.5},
    )  # fmt: skip
    result = unlearn(config, progress=False)
    model, tokenizer = load_model_and_tokenizer(reference)
    samples = {r["id"]: r["ids"] for r in scenario_rows(scenario)}
    checked = 0
    for batch in seen:
        for row in range(len(batch)):
            ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
            (sample_id,) = [i for i, s in samples.items() if s == ids]
            scored = teacher_forced(model, [ids], tokenizer.pad_token_id, token_logprobs=True)
            expected = scored.token_logprobs[0] - 0.5
            torch.testing.assert_close(
                batch.floor[row, : len(ids) - 1], expected, atol=2e-6, rtol=0
            )
            assert torch.isinf(batch.floor[row, len(ids) - 1 :]).all()  # padding: none
            stored = result.manifest["reference_scores"][sample_id]["token_logprobs"]
            assert len(stored) == len(ids) - 1
            checked += 1
    assert checked == len(samples)  # one epoch: every sequence once


def scenario_rows(scenario) -> list[dict]:
    """The forget set's token ids per id, as the run tokenizes them."""
    from icu_unlearn.data.forget import load_forget_set
    from icu_unlearn.models import load_model_and_tokenizer

    _, tokenizer = load_model_and_tokenizer(str(scenario["planted_model"]))
    forget = load_forget_set(str(scenario["forget"]), tokenizer, 20)
    return [{"id": s.id, "ids": s.input_ids} for s in forget]


def test_a_token_floor_bounds_how_far_each_suffix_token_is_pushed_down(scenario, tmp_path):
    """Gradient ascent alone (KUMPR) drives the suffixes nats a token below where they
    started. With the planted model itself as the floor's reference and stop.token_floor
    2, a token is held at 2 nats under its starting log-probability (pushed down while
    above, pulled back up below): the records end near 2 nats down. (`mean` scope: under `each` a model equal to its
    reference is done at once; thresholds no run can meet, so each trains every epoch.)
    A floor too far down to reach (1000 nats) is the
    unbounded run exactly: the floor changes nothing else."""
    keys = {
        "method": "kumpr", "max_epochs": 12, "lr": 2e-4, "batch_size": 1,
        "stop.scope": "mean", "stop.reference": str(scenario["planted_model"]),
        "stop.el_max": 0, "stop.ma_max": 0,  # never met: every run trains 12 epochs
        "forget_target": "ascent",  # the floor bounds the ascent term; unbounded is ascent
    }  # fmt: skip
    runs = {
        floor: unlearn(
            _config(scenario, tmp_path / str(floor), **keys, **{"stop.token_floor": floor}),
            progress=False,
        )
        for floor in ("null", 2, 1000)
    }
    gap = {k: r.manifest["likelihood_vs_reference"]["mean_gap"] for k, r in runs.items()}
    assert gap["null"] > 6.0, gap  # unbounded: far below the starting likelihood
    assert 1.0 < gap[2] < 3.5, gap  # bounded: about the floor's 2 nats
    a = load_file(runs["null"].model_dir / "model.safetensors")
    b = load_file(runs[1000].model_dir / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "stop.token_floor needs stop.reference"),
        ({"method": "npo", "stop.reference": "x"}, "which npo has not"),
        ({"stop.reference": "x", "stop.token_floor": -1}, "must be >= 0"),
    ],
)
def test_a_token_floor_without_its_inputs_is_refused(scenario, extra, message):
    from icu_unlearn.errors import UsageError

    with pytest.raises(UsageError, match=message):
        _config(scenario, "x", **{"stop.token_floor": 0.5, **extra}).require()


def test_a_floored_icu_run_resumes_to_the_uninterrupted_run(scenario, tmp_path):
    """The floors come from the reference measured once at the start; a resumed run
    takes them from its checkpoint, not from a new measurement, and ends where an
    uninterrupted run ends."""
    keys = {"stop.reference": str(scenario["base"]), "stop.token_floor": 1.0, "lr": 1e-4}
    whole = unlearn(_config(scenario, tmp_path / "whole", max_epochs=3, **keys), progress=False)
    part = unlearn(
        _config(scenario, tmp_path / "part", max_epochs=2, **keys),
        progress=False,
        keep_checkpoints=True,
    )
    assert part.manifest["epochs"] == 2
    resumed = unlearn(
        _config(scenario, tmp_path / "part", max_epochs=3, **keys), resume=True, progress=False
    )
    assert whole.status == resumed.status
    floors = {i: r["token_logprobs"] for i, r in whole.manifest["reference_scores"].items()}
    assert floors == {
        i: r["token_logprobs"] for i, r in resumed.manifest["reference_scores"].items()
    }
    scored_alike(without_times(whole.epochs), without_times(resumed.epochs))
    a = load_file(whole.model_dir / "model.safetensors")
    b = load_file(resumed.model_dir / "model.safetensors")
    base = load_file(scenario["planted_model"] / "model.safetensors")
    assert any(not torch.equal(base[k], a[k]) for k in base)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_a_run_that_wrecks_the_retained_records_stops_names_them_and_exits_3(scenario, tmp_path):
    """Ascent at a high rate takes the eight planted-and-kept records down with the forget
    set: the run stops at the first epoch that damaged one, keeps the model before it (the
    input model), ends retain_damaged with exit 3 and names each damaged record."""
    out = tmp_path / "run"
    keys = {
        "model": scenario["planted_model"], "forget": scenario["forget"],
        "analogous.pool": scenario["pool"], "probe.retain": scenario["retained"],
        "prefix_length": 20, "lr": 5e-2, "alpha": 0.0, "beta": 0.0, "batch_size": 4,
        "max_epochs": 3,
    }  # fmt: skip
    sets = [a for k, v in keys.items() for a in ("--set", f"{k}={v}")]
    proc = call_cli("run", *sets, "--out", str(out))
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "retain_damaged" and manifest["epochs"] == 0
    retained = manifest["retained"]
    kept = [json.loads(line)["id"] for line in scenario["retained"].read_text().splitlines()]
    assert list(retained["per_record"]) == kept and retained["max_ma_drop"] == 0.1
    damaged = retained["damaged"]
    assert damaged and set(damaged) <= set(kept)
    for i, r in retained["per_record"].items():
        assert r["after"] == r["before"]  # the input model kept
        assert r["before"]["ma"] > 0.9
        if i in damaged:
            assert damaged[i]["ma"] < r["before"]["ma"] - 0.1
    assert manifest["diverged"]["retain_damaged"] == damaged
    assert "status: retain_damaged" in proc.stdout
    assert f"{len(damaged)} kept record(s) DAMAGED at epoch 1" in proc.stdout
    for i, r in damaged.items():
        assert (
            f"  {i}: MA {retained['per_record'][i]['before']['ma']:.4f} -> {r['ma']:.4f}"
            in proc.stdout
        )
    assert all(i in proc.stdout for i in kept)  # every kept record's before and after shown
