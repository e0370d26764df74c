"""IUR removal rule, k-NN pairing, and the run configuration."""

from __future__ import annotations

import numpy as np
import pytest

from icu_unlearn.audit import AuditSettings
from icu_unlearn.config import RefinementConfig, dump_config, load_config, valid_keys
from icu_unlearn.errors import UsageError
from icu_unlearn.pairing import pair
from icu_unlearn.refinement import is_forgotten


@pytest.mark.parametrize(
    "bert, bleu, all_rule, any_rule",
    [
        (0.29, 0.009, True, True),  # both under: forgotten by either rule
        (0.29, 0.02, False, True),  # only BERTScore under
        (0.31, 0.009, False, True),  # only BLEU under
        (0.31, 0.02, False, False),  # neither
        (0.30, 0.005, False, True),  # the bounds are strict: 0.30 is not < 0.30
    ],
)
def test_removed_exactly_when_the_rule_says(bert, bleu, all_rule, any_rule):
    assert is_forgotten(bert, bleu, RefinementConfig(rule="all")) is all_rule
    assert is_forgotten(bert, bleu, RefinementConfig(rule="any")) is any_rule


def _unit(rows):
    v = np.asarray(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_pairing_excludes_members_and_near_copies_deterministically():
    forget = _unit([[1, 0, 0], [0, 1, 0]])
    pool = _unit(
        [
            [1, 0, 0],  # 0: the forget sample itself (a member)
            [1, 0.05, 0],  # 1: a near-copy of forget 0 (cos 0.9988)
            [1, 1, 0],  # 2: cos 0.707 to both forget samples
            [1, 0.9, 0.3],  # 3: cos 0.72 to forget 0
            [0, 1, 1],  # 4: cos 0.707 to forget 1, a tie with 2 -> the lower index wins
        ]
    )
    members = np.array([True, False, False, False, False])
    result = pair(["a", "b"], forget, pool, members, k=1, max_similarity=0.99)
    assert [p.pool_index for p in result.pairs["a"]] == [3]
    assert [p.pool_index for p in result.pairs["b"]] == [2]
    assert result.excluded == 1 and result.excluded_near_copies == 1
    again = pair(["a", "b"], forget, pool, members, k=1, max_similarity=0.99)
    assert again.to_rows() == result.to_rows()
    two = pair(["a"], forget[:1], pool, members, k=2, max_similarity=0.99)
    assert [p.pool_index for p in two.pairs["a"]] == [3, 2]


def test_a_near_copy_of_one_forget_sample_is_never_anothers_pair():
    """Pool row 0 is a near-copy of A (cos 0.95 > 0.9) and B's nearest row (cos 0.82):
    learning it as B's pair would teach A back, so it is excluded for every sample."""
    forget = _unit([[1, 0, 0], [0.6, 0.8, 0]])  # A, B
    pool = _unit(
        [
            [0.95, 0.3122, 0],  # 0: cos 0.950 to A, 0.820 to B
            [0, 1, 0],  # 1: cos 0.8 to B, 0 to A
            [0.7, 0, 0.7141],  # 2: cos 0.7 to A, 0.42 to B
        ]
    )
    result = pair(["a", "b"], forget, pool, np.zeros(3, dtype=bool), k=1, max_similarity=0.9)
    assert [p.pool_index for p in result.pairs["a"]] == [2]
    assert [p.pool_index for p in result.pairs["b"]] == [1]
    assert result.excluded == 0
    assert result.excluded_near_copies == 1 and result.near_copies == {0: "a"}
    two = pair(["a", "b"], forget, pool, np.zeros(3, dtype=bool), k=2, max_similarity=0.9)
    assert all(0 not in [p.pool_index for p in ps] for ps in two.pairs.values())


def test_near_copies_are_counted_once_however_many_samples_they_copy():
    """Row 0 is above the ceiling for both A (cos 0.990) and B (0.989): one excluded row,
    attributed to the sample it is closest to; a member is counted as a member only."""
    forget = _unit([[1, 0, 0], [0.96, 0.28, 0]])
    pool = _unit(
        [
            [1, 0.14, 0],  # 0: a near-copy of both
            [0, 0, 1],  # 1: cos 0 to both
            [0.5, 0, 0.866],  # 2: cos 0.50 to A, 0.48 to B
            [1, 0, 0],  # 3: A itself, a member
        ]
    )
    members = np.array([False, False, False, True])
    result = pair(["a", "b"], forget, pool, members, k=1, max_similarity=0.9)
    assert result.pairs["a"][0].pool_index == 2 and result.pairs["b"][0].pool_index == 2
    assert (result.excluded, result.excluded_near_copies) == (1, 1)
    assert result.near_copies == {0: "a"}


def test_pairing_runs_out_of_neighbours_clearly():
    forget = _unit([[1, 0]])
    pool = _unit([[1, 0], [1, 0.01]])
    with pytest.raises(UsageError, match="allowed pool neighbours"):
        pair(["a"], forget, pool, np.array([True, False]), k=1, max_similarity=0.9)


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nforget: f.jsonl\nalpha: 1\nrefinement:\n  rule: any\n")
    config = load_config(path, ["beta=0", "refinement.num_beams=2", "stop.thresholds=auto"])
    assert config.alpha == 1.0 and isinstance(config.alpha, float)
    assert config.beta == 0.0 and config.refinement.rule == "any"
    assert config.refinement.num_beams == 2 and config.stop.thresholds == "auto"
    assert config.lr == 5e-6 and config.batch_size == 8  # the paper's defaults


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("model: m\nalhpa: 1\n", [], "unknown config key alhpa; valid keys: model, forget"),
        ("model: m\n", ["refinement.rul=any"], "unknown config key refinement.rul"),
        ("model: m\nlr: fast\n", [], "lr must be float"),
        ("model: [unclosed\n", [], "not valid YAML at line"),
        ("- a\n- b\n", [], "must be a mapping"),
        ("model: m\n", ["refinement.rule=either"], "refinement.rule must be 'all' or 'any'"),
        ("model: m\n", ["batch_size=8", "grad_accum=3"], "not a multiple"),
        ("model: m\n", ["alpha"], "must look like key=value"),
        ("model: m\n", ["audit.schemes=[{tk: 3}]"], "valid keys: audit.schemes.0..temperature"),
        ("model: m\n", ["audit.schemes=[]"], "audit.schemes is empty"),
        ("model: m\n", ["audit.schemes=[{top_p: 2}]"], "top_p must be in"),
        ("model: m\n", ["audit.sampler=3"], "audit.sampler must be a mapping"),
        ("model: m\n", ["audit.mia_k=2"], "audit.mia_k must be in"),
        ("model: m\n", ["prefix_weight=-1"], "prefix_weight must be 0"),
    ],
)
def test_bad_config_is_a_usage_error(tmp_path, text, overrides, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_config(path, overrides)


def test_audit_settings_come_from_the_run_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "audit:\n  schemes:\n    - {top_k: 40}\n    - {temperature: 0.7, top_p: 0.9}\n"
        "  sampler: {top_k: 20}\n  seed: 7\n"
    )
    config = load_config(path, ["audit.mia_k=0.1"])
    settings = config.audit.settings(el_n=5)
    assert [s.label() for s in settings.schemes] == ["T=1 k=40", "T=0.7 p=0.9"]
    assert settings.sampler.top_k == 20 and settings.seed == 7 and settings.mia_k == 0.1
    assert settings.el_n == 5 and settings.stands_out_margin == AuditSettings().stands_out_margin
    # the written config reads back to the same settings (resume compares them)
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


def test_valid_keys_lists_nested_keys():
    keys = valid_keys()
    assert "refinement.bertscore_max" in keys and "analogous.k" in keys and "stop.el_max" in keys


def test_a_pool_text_sharing_a_run_of_tokens_with_a_forget_sample_is_excluded(gpt2):
    """analogous.shared_tokens n: a pool text whose tokens hold n consecutive tokens of
    some forget sample's is never learnt, whichever sample it is nearest to; one sharing
    n - 1 only stays; 0 turns the exclusion off."""
    from icu_unlearn.data.forget import ForgetSample
    from icu_unlearn.data.training_data import _shares_tokens

    def sample(text: str) -> ForgetSample:
        ids = gpt2(text, add_special_tokens=False).input_ids
        return ForgetSample("f", tuple(ids[:4]), tuple(ids[4:]), "", "")

    forget = [sample(" one two three four five six seven eight nine ten eleven twelve")]
    pool = [
        " alpha beta four five six seven eight gamma",  # shares the 5 tokens four..eight
        " alpha beta four five six seven gamma delta",  # shares 4 (four..seven)
        " nothing of it here at all",
    ]
    assert _shares_tokens(pool, forget, gpt2, 5) == [True, False, False]
    assert _shares_tokens(pool, forget, gpt2, 4) == [True, True, False]
    assert _shares_tokens(pool, forget, gpt2, 0) == [False, False, False]
    # the definition, literally, on every pool text: some window of n tokens is in the forget ids
    ids = list(forget[0].input_ids)
    for n in (3, 4, 5, 6):
        windows = [ids[i : i + n] for i in range(len(ids) - n + 1)]
        expected = []
        for text in pool:
            t = gpt2(text, add_special_tokens=False).input_ids
            expected.append(any(t[i : i + n] in windows for i in range(len(t) - n + 1)))
        assert _shares_tokens(pool, forget, gpt2, n) == expected


def test_shared_tokens_must_be_a_count(tmp_path):
    with pytest.raises(UsageError, match="analogous.shared_tokens must be 0"):
        load_config(None, ["model=m", "analogous.shared_tokens=-1"])
