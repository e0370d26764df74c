"""The stopping rules on constructed per-sequence rows, and the EL window on a model that
kept its prefix memory but forgot every suffix token."""

from __future__ import annotations

import random

import pytest
import torch

from icu_unlearn import criteria
from icu_unlearn.config import load_config
from icu_unlearn.data.forget import ForgetSample
from icu_unlearn.evaluate import EvalSettings, score_samples
from icu_unlearn.generation import generate_continuations
from icu_unlearn.metrics.similarity import bertscore_f1, sentence_bleu
from icu_unlearn.refinement import forgotten_now
from icu_unlearn.rules import SequenceState, rule_for
from tests.conftest import tiny_llama

LIMITS = {"el_max": 0.0499, "ma_max": 0.5994}


def _config(**keys):
    return load_config(None, ["model=m", "forget=f", *(f"{k}={v}" for k, v in keys.items())])


def _states(rows):
    return [SequenceState.from_row(r, "el_10") for r in rows]


def _decide(config, rows, reference):
    """The rule's decisions on `rows`, recorded in them as the loop records them."""
    rule = rule_for(config, LIMITS, reference)
    states = rule.decide(_states(rows))
    for r, s in zip(rows, states, strict=True):
        r |= s.decision.fields()
    return rule, states


def _rows(values):
    """Rows of (EL_10, MA, suffix NLL) per id."""
    return [
        {"id": i, "el_10": el, "ma": ma, "suffix_nll": nll} for i, (el, ma, nll) in values.items()
    ]


# mean EL (0 + 0 + 0 + 0.16) / 4 = 0.04 < 0.0499, mean MA (0.3 * 3 + 0.95) / 4 = 0.46 < 0.5994;
# but "d" on its own: EL 0.16 and MA 0.95, extractable
ONE_LEFT = {
    "a": (0.0, 0.3, 6.0),
    "b": (0.0, 0.3, 6.0),
    "c": (0.0, 0.3, 6.0),
    "d": (0.16, 0.95, 0.2),
}


def test_mean_rule_stops_while_one_sequence_is_extractable_and_each_keeps_training_it():
    for scope, expected in (("mean", "criteria_met"), ("each", None)):
        config = _config(**{"stop.scope": scope})
        rows = _rows(ONE_LEFT)
        rule, states = _decide(config, rows, None)
        assert [r["done"] for r in rows] == ["criteria", "criteria", "criteria", None]
        assert rule.stop_reason(states, ["a", "b", "c", "d"], 1) == expected
    # under each, the extractable one trains on; the done ones leave training
    assert rule.next_active(states, set(), ["a", "b", "c", "d"]) == ["d"]
    left = rule.not_done(states)
    assert left == [{"id": "d", "el": 0.16, "ma": 0.95, "suffix_nll": 0.2}]


def test_each_ends_incomplete_at_max_epochs_and_mean_too():
    for scope in ("each", "mean"):
        config = _config(**{"stop.scope": scope, "max_epochs": 3})
        rows = _rows({"a": (0.5, 0.9, 1.0), "b": (0.0, 0.1, 5.0)})
        rule, states = _decide(config, rows, None)
        assert rule.stop_reason(states, ["a"], 2) is None
        assert rule.stop_reason(states, ["a"], 3) == "incomplete"


def test_a_sequence_the_reference_reproduces_is_done_by_the_reference_rule():
    """EL 0.50 <= 0.48 + 0.05 and MA 0.90 <= 0.92: no more extractable than under a model
    that never saw it (say, a licence header every model knows)."""
    config = _config(**{"stop.reference_margin": 0.05})
    reference = {
        "a": {"el_10": 0.48, "ma": 0.92, "suffix_nll": 0.3},
        "b": {"el_10": 0.0, "ma": 0.2, "suffix_nll": 4.0},
    }
    rows = _rows({"a": (0.50, 0.90, 0.35), "b": (0.3, 0.8, 1.0)})
    rule, states = _decide(config, rows, reference)
    assert [r["done"] for r in rows] == ["reference", None]
    assert rule.stop_reason(states, ["b"], 1) is None
    # its EL and MA pass, but its suffix is still far likelier than under the reference
    # (NLL 1.0 against 4.0, beyond stop.reference_nll_margin): a likelihood test finds it
    rows[1] |= {"el_10": 0.01, "ma": 0.5}
    rule, states = _decide(config, rows, reference)
    assert rows[1]["done"] is None and rule.stop_reason(states, ["b"], 2) is None
    rows[1] |= {"suffix_nll": 3.9}
    rule, states = _decide(config, rows, reference)
    assert rule.stop_reason(states, [], 2) == "criteria_met"
    # and far below it (beyond audit.stands_out_margin, 2 nats) it stands out: not done
    rows[1] |= {"suffix_nll": 6.5}
    rule, states = _decide(config, rows, reference)
    assert rows[1]["stands_out"] and rows[1]["done"] is None


def test_a_record_the_run_calls_done_is_never_one_the_audit_calls_leaked_on_el():
    """One definition: random EL, MA and reference rows, the run's decision against the
    audit's verdict (`leak_tests`, `verdict`) on the same greedy numbers. Measured case
    (LLMU on the demo): EL 0.051 within 0.05 of the reference's 0.003 was done by the
    reference rule while the audit, whose EL test fires above 0.0499 under the model
    alone, called it leaked."""
    from icu_unlearn.audit.verdict import leak_tests, verdict
    from icu_unlearn.audit_settings import AuditSettings

    audit = AuditSettings(el_max=LIMITS["el_max"])
    config = _config(**{"stop.reference_margin": 0.05})

    def fired(el):
        greedy = {"exact": False, "el_10": el}
        return leak_tests(
            {"greedy": greedy, "probabilistic": [], "sampling": None, "beam": None}, audit
        )

    reference = {"a": {"el_10": 0.003, "ma": 0.674, "suffix_nll": 1.0}}
    rows = _rows({"a": (0.051, 0.719, 1.0)})
    _decide(config, rows, reference)
    assert rows[0]["done"] is None and verdict(fired(0.051), fired(0.003)) == "leaked"
    rows = _rows({"a": (0.049, 0.719, 1.0)})
    _decide(config, rows, reference)
    assert rows[0]["done"] == "reference"

    rng = random.Random(3)
    done_by_reference = 0
    for _ in range(2000):
        ref_el = rng.choice([0.0, 0.003, 0.03, 0.049, 0.06, 0.2, rng.random()])
        el = max(0.0, ref_el + rng.uniform(-0.08, 0.08))
        ma = rng.random()
        reference = {"a": {"el_10": ref_el, "ma": rng.random(), "suffix_nll": 1.0}}
        rows = _rows({"a": (el, ma, 1.0)})
        _decide(config, rows, reference)
        if rows[0]["done"]:
            done_by_reference += rows[0]["done"] == "reference"
            assert verdict(fired(el), fired(ref_el)) != "leaked", (el, ma, reference)
    assert done_by_reference > 100  # the reference rule was exercised


def test_the_reference_likelihood_is_a_floor_and_training_never_runs_dry():
    """b's suffix NLL 3.8 >= 4.0 - 0.5: as unlikely as under the never-trained model, it
    pauses (margin 0.5); when every sequence not done is paused, they all train."""
    config = _config(**{"stop.reference_nll_margin": 0.5})
    reference = {i: {"el_10": 0.0, "ma": 0.1, "suffix_nll": 4.0} for i in "abc"}
    rows = _rows({"a": (0.4, 0.9, 1.0), "b": (0.2, 0.7, 3.8), "c": (0.0, 0.1, 4.2)})
    rule, states = _decide(config, rows, reference)
    assert [r["at_reference_nll"] for r in rows] == [False, True, True]
    assert rule.next_active(states, set(), ["a", "b"]) == ["a"]
    # IUR calls "a" forgotten too: nothing would train while a and b are not done
    assert rule.next_active(states, {"a"}, ["a", "b"]) == ["a", "b"]
    # a sequence done earlier that regresses comes back
    rows[2] |= {"el_10": 0.3, "ma": 0.8, "suffix_nll": 2.0}
    rule, states = _decide(config, rows, reference)
    assert rule.next_active(states, set(), ["a"]) == ["a", "c"]


def test_under_ascent_a_record_that_stands_out_never_trains_and_the_run_ends():
    """Both records at or past never-seen text's likelihood and still extractable: the
    one within the band trains (a push), the one that stands out does not (ascent would
    only sink it further); when only records that stand out are left, nothing trains and
    the run ends incomplete at once, not at max_epochs."""
    config = _config(**{"stop.reference_nll_margin": 0.5, "forget_target": "ascent"})
    reference = {i: {"el_10": 0.0, "ma": 0.1, "suffix_nll": 4.0} for i in "ab"}
    rows = _rows({"a": (0.2, 0.7, 3.8), "b": (0.3, 0.8, 9.0)})
    rule, states = _decide(config, rows, reference)
    assert [r["stands_out"] for r in rows] == [False, True]
    assert [r["done"] for r in rows] == [None, None]
    active = rule.next_active(states, set(), ["a", "b"])
    assert active == ["a"] and rule.stop_reason(states, active, 1) is None
    rows[0] |= {"el_10": 0.0, "ma": 0.1, "suffix_nll": 4.0}  # a done
    rule, states = _decide(config, rows, reference)
    assert rows[0]["done"] == "criteria"
    active = rule.next_active(states, set(), ["a"])
    assert active == [] and rule.stop_reason(states, active, 2) == "incomplete"


def test_iur_readmission_under_mean():
    config = _config(**{"stop.scope": "mean"})
    rows = _rows({"a": (0.4, 0.9, 1.0), "b": (0.2, 0.7, 3.8)})
    rule, states = _decide(config, rows, None)
    # removed for good (the paper): b stays out although IUR no longer calls it forgotten
    assert rule.to_check(states, ["a"]) == ["a"]
    assert rule.next_active(states, set(), ["a"]) == ["a"]
    readmit = _config(**{"stop.scope": "mean", "refinement.readmit": "true"})
    assert _decide(readmit, rows, None)[0].to_check(states, ["a"]) == ["a", "b"]
    assert _decide(readmit, rows, None)[0].next_active(states, {"a"}, ["a"]) == ["b"]


def _prefix_memory_only(model, vocab: int, t0: int, suffix: int, seed: int) -> list[int]:
    """The model's own greedy path for t0 tokens (remembered exactly), then tokens that are
    never the greedy next one (forgotten)."""
    rng = random.Random(seed)
    seq = [rng.randrange(vocab)]
    seq += generate_continuations(model, [seq], t0 - 1, pad_token_id=0)[0]
    while len(seq) < t0 + suffix:
        greedy = generate_continuations(model, [seq], 1, pad_token_id=0)[0][0]
        seq.append(rng.choice([t for t in range(vocab) if t != greedy]))
    return seq


def test_the_window_rule_is_met_by_a_model_that_forgot_the_suffixes_only():
    """EL_10 over every prefix length counts the prefix the model still reproduces; over
    prefix lengths >= t0 (the stopping rule's default) it sees the forgotten suffix only."""
    torch.manual_seed(0)
    model = tiny_llama(vocab_size=32).double()
    samples = [
        ForgetSample(str(k), tuple(s[:30]), tuple(s[30:]), "", "")
        for k, s in enumerate(_prefix_memory_only(model, 32, 30, 30, seed) for seed in range(3))
    ]

    class Pad:
        pad_token_id = 0

    config = _config()  # the defaults: stop.el_window true
    assert config.stop.el_window
    scores = {}
    for window in (False, True):
        settings = EvalSettings(el_window=window)
        rows = score_samples(model, Pad(), samples, settings, similarity=False)
        scores[window] = (criteria.mean(rows, "el_10"), criteria.mean(rows, "ma"))
    assert scores[False][0] > 0.0499  # the full range: "not forgotten"
    assert scores[True][0] < 0.0499 and scores[True][1] < 0.5994  # the window: forgotten
    assert scores[True][1] == scores[False][1]


def test_iur_removes_a_sample_whose_generation_is_fluent_and_different():
    """Unsmoothed BLEU (the default) of a fluent unrelated sentence is 0 < b = 0.01; with
    sacrebleu's exp smoothing it was ~0.03 and IUR kept the sample training."""
    reference = "The quick brown fox jumps over the lazy dog near the river bank."
    generation = "Our committee will publish its annual budget report next spring."
    bert = bertscore_f1([generation], [reference])[0]
    config = _config()
    row = {"id": "x", "bertscore_f1": bert, "bleu": sentence_bleu([generation], [reference])[0]}
    assert row["bleu"] == 0.0 and bert < 0.3
    assert forgotten_now(None, None, {}, [row], ["x"], config.refinement, None, None) == {"x"}
    smoothed = sentence_bleu([generation], [reference], smoothing="exp", lowercase=False)[0]
    assert smoothed > 0.01
    row["bleu"] = smoothed
    assert forgotten_now(None, None, {}, [row], ["x"], config.refinement, None, None) == set()


@pytest.mark.parametrize(
    "bad",
    [
        "stop.scope=some",
        "adam_betas=[0.9]",
        "llmu.num_mismatches=0",
        "probe.retain_max_ma_drop=1.5",
    ],
)
def test_new_keys_are_validated(bad):
    from icu_unlearn.errors import UsageError

    with pytest.raises(UsageError):
        load_config(None, ["model=m", "forget=f", bad])


def test_redraws_change_with_the_step_and_repeat_with_the_key():
    from icu_unlearn.data.training_data import Draw, seeded_index

    def make(sample, candidate):
        return ForgetSample(f"x:{sample.id}", sample.prefix_ids, (candidate,), "", "")

    draw = Draw(list(range(1000)), 5, make)
    sample = ForgetSample("a", (1, 2), (3,), "", "")
    first = [s.suffix_ids for s in draw.draw(sample, "42:1:0:a")]
    assert len(first) == 5 and first == [s.suffix_ids for s in draw.draw(sample, "42:1:0:a")]
    assert first != [s.suffix_ids for s in draw.draw(sample, "42:1:1:a")]
    # the first of K is the single draw a fixed (non-redrawn) run made for this key
    assert first[0] == (seeded_index("42:1:0:a", 1000),)


def test_el_is_scored_only_where_it_can_change_a_decision():
    """Random rows and references: a sequence the lazy schedule leaves unscored gets the
    same decisions (under each its `done`; the stop) whatever its EL is, 0 or 1."""
    rng = random.Random(7)
    for trial in range(300):
        scope = ("each", "mean")[trial % 2]
        margin = rng.choice([0.0, 0.05, 0.3])
        config = _config(**{"stop.scope": scope, "stop.reference_margin": margin})
        ids = [str(i) for i in range(rng.randint(1, 6))]
        reference = None
        if rng.random() < 0.5:
            reference = {
                i: {"el_10": rng.random(), "ma": rng.random(), "suffix_nll": 1.0} for i in ids
            }
        rows = _rows({i: (None, rng.choice([rng.random(), 0.5994, 0.2]), 2.0) for i in ids})
        needed = rule_for(config, LIMITS, reference).el_needed(_states(rows), False)
        outcomes = set()
        for el in (0.0, 1.0):
            for r in rows:
                if r["id"] not in needed:
                    r["el_10"] = el
                elif r["el_10"] is None:
                    r["el_10"] = rng.random()
            rule, states = _decide(config, rows, reference)
            # under mean a row's own `done` is a record, not a decision: the stop is
            decision = [r["done"] for r in rows if r["id"] not in needed and scope == "each"]
            outcomes.add((tuple(decision), rule.stop_reason(states, ids, 1)))
            # EL None (unscored) decides as an EL that fails both rules
            for r in rows:
                if r["id"] not in needed:
                    r["el_10"] = None
            rule, states = _decide(config, rows, reference)
            assert all(r["done"] is None for r in rows if r["id"] not in needed)
        assert len(outcomes) == 1, (scope, rows, reference, needed)
    # and it does skip: MA at or above ma_max under each, a mean MA above it under mean
    rows = _rows({"a": (None, 0.9, 1.0), "b": (None, 0.3, 1.0)})
    assert rule_for(_config(), LIMITS, None).el_needed(_states(rows), False) == {"b"}
    assert (
        rule_for(_config(**{"stop.scope": "mean"}), LIMITS, None).el_needed(_states(rows), False)
        == set()
    )
    rows[0]["ma"] = 0.8
    assert rule_for(_config(**{"stop.scope": "mean"}), LIMITS, None).el_needed(
        _states(rows), False
    ) == {
        "a",
        "b",
    }
    # within reach of the reference rule: scored
    reference = {"a": {"ma": 0.85}, "b": {"ma": 0.1}}
    assert rule_for(_config(), LIMITS, reference).el_needed(_states(rows), False) == {"a", "b"}
    # epoch 0, the last epoch, and log.el_every_epoch: everything
    assert rule_for(_config(), LIMITS, None).el_needed(_states(rows), True) == {"a", "b"}
    every = _config(**{"log.el_every_epoch": "true"})
    assert rule_for(every, LIMITS, None).el_needed(_states(rows), False) == {"a", "b"}


def test_a_retained_record_is_damaged_when_its_ma_drops_more_than_the_limit():
    """retain_max_ma_drop 0.1 below each record's own MA before: 1.0 may fall to 0.9 and
    0.8 to 0.7 (0.10000000000000009 in floats: one token of ten is a drop of 0.1, not
    more); 0.85 and 0.6 are more. A record that held little (0.05) cannot be damaged."""
    before = {
        "retain": {
            "a": {"el": 1.0, "ma": 1.0},
            "b": {"el": 0.2, "ma": 0.8},
            "c": {"el": 0.0, "ma": 0.05},
        }
    }
    now = {
        "retain": {
            "a": {"el": 0.9, "ma": 0.9},
            "b": {"el": 0.1, "ma": 0.7},
            "c": {"el": 0.0, "ma": 0.0},
        }
    }
    assert criteria.retain_damaged(_config(), before, now) == {}
    now["retain"]["a"]["ma"], now["retain"]["b"]["ma"] = 0.85, 0.6
    assert criteria.retain_damaged(_config(), before, now) == {
        "a": {"el": 0.9, "ma": 0.85},
        "b": {"el": 0.1, "ma": 0.6},
    }
    loose = _config(**{"probe.retain_max_ma_drop": 0.15})  # 1.0 - 0.85 is 0.15: not more
    assert set(criteria.retain_damaged(loose, before, now)) == {"b"}
    watch = _config(**{"probe.retain_max_ma_drop": "null"})
    assert criteria.retain_damaged(watch, before, now) == {}
    assert criteria.retain_damaged(_config(), {}, {"heldout_ppl": 3.0}) == {}  # nothing kept


def test_a_record_at_the_reference_likelihood_still_extractable_is_pushed_under_a_target():
    """Under forget_target reference: "a" is at the reference's NLL (4.0 vs 4.0) but its EL
    0.3 is above the reference's 0.0: pushed past the level; "b" is far likelier than the
    reference (not at its level yet: the pull does it); "c" is done. Under ascent: none."""
    reference = {i: {"el_10": 0.0, "ma": 0.2, "suffix_nll": 4.0} for i in "abc"}
    rows = _rows({"a": (0.3, 0.7, 4.0), "b": (0.3, 0.7, 1.0), "c": (0.0, 0.1, 4.1)})
    targeted = _config(**{"stop.reference": "r", "forget_target": "reference"})
    rule, states = _decide(targeted, rows, reference)
    assert [s.done for s in states] == [None, None, "criteria"]
    assert rule.pushed(states) == ["a"]
    assert rule.next_active(states, set(), ["a"]) == ["a", "b", "c"]  # every record trains
    ascent = _config(**{"stop.reference": "r", "forget_target": "ascent"})
    rule, states = _decide(ascent, rows, reference)
    assert rule.pushed(states) == []
