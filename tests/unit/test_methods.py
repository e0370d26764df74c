"""Every method's loss against numbers worked out by hand on one fixed tiny batch.

The model is a bigram table over a 3-token vocabulary: the logits at position t
depend only on x_t, so every probability can be written down. The policy puts
logit ln 2 on the token after x_t (mod 3): P(next = x_t + 1) = 1/2, the other two
1/4. The reference model is uniform: P = 1/3 everywhere.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from icu_unlearn.config import load_config
from icu_unlearn.methods import METHODS
from icu_unlearn.methods.base import MISMATCH, PAIRS, REFUSAL, Batch

LN2 = math.log(2)


class Bigram(torch.nn.Module):
    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        # logits_to_keep as in transformers: the last N positions, 0 for all of them
        return SimpleNamespace(logits=self.table[input_ids][:, -logits_to_keep:])


def _policy():
    table = torch.zeros(3, 3)
    for token in range(3):
        table[token, (token + 1) % 3] = LN2
    return Bigram(table)


def _reference():
    return Bigram(torch.zeros(3, 3)).requires_grad_(False)


def _batch(rows, t0=2):
    return Batch(
        torch.tensor(rows),
        torch.ones(len(rows), len(rows[0]), dtype=torch.long),
        torch.tensor([t0] * len(rows)),
    )


# prefix [0, 1]; the forget suffix [2, 0] follows the policy's favourite path:
# P(2 | 1) = 1/2, P(0 | 2) = 1/2 -> mean log P = -ln 2, sum = -2 ln 2; reference sum = 2 ln(1/3)
BATCHES = {
    "forget": _batch([[0, 1, 2, 0]]),
    # pair [2, 0 | 1, 2]: P(1 | 0) = 1/2, P(2 | 1) = 1/2 -> NLL = ln 2
    PAIRS: _batch([[2, 0, 1, 2]]),
    # prefix [0, 1] + another suffix [1, 2]: P(1 | 1) = 1/4, P(2 | 1) = 1/2 -> NLL = (ln 4 + ln 2) / 2
    MISMATCH: _batch([[0, 1, 1, 2]]),
    # prefix [0, 1] + refusal [0, 1]: P(0 | 1) = 1/4, P(1 | 0) = 1/2 -> sum log P = ln(1/8)
    REFUSAL: _batch([[0, 1, 0, 1]]),
}
# KL(P0 || P) per position, P0 uniform, P = (1/2, 1/4, 1/4) up to order:
# 1/3 ln((1/3)/(1/2)) + 2/3 ln((1/3)/(1/4)) = 1/3 ln(2/3) + 2/3 ln(4/3)
KL = math.log(2 / 3) / 3 + 2 * math.log(4 / 3) / 3  # 0.0566


def _loss(method, batches=None, **overrides):
    config = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    policy, reference = _policy(), _reference()
    loss, terms = METHODS[method].loss(policy, reference, batches or BATCHES, config)
    loss.backward()
    assert policy.table.grad is not None and policy.table.grad.abs().sum() > 0
    assert reference.table.grad is None and torch.equal(reference.table, torch.zeros(3, 3))
    return loss.item(), terms


def test_kumpr_is_the_mean_suffix_log_likelihood():
    # suffix-only (our former default); the forget sample follows the policy's favourite
    # path, so every token has P = 1/2 and the whole-sequence default gives -ln 2 too
    for suffix_only in ("true", "false"):
        loss, _ = _loss("kumpr", **{"kumpr.suffix_only": suffix_only})
        assert loss == pytest.approx(-LN2, abs=1e-6)  # -0.6931


def test_kumpr_ascends_on_every_token_by_default(monkeypatch):
    """Forget [0, 0 | 1, 2]: P(0 | 0) = 1/4 on the prefix token, P(1 | 0) = P(2 | 1) = 1/2
    on the suffix. Jang et al.'s whole sequence (the default): (ln 1/4 + 2 ln 1/2) / 3
    = -4/3 ln 2 = -0.9242; kumpr.suffix_only: -ln 2 = -0.6931."""
    monkeypatch.setitem(BATCHES, "forget", _batch([[0, 0, 1, 2]]))
    loss, _ = _loss("kumpr")
    assert loss == pytest.approx(-4 / 3 * LN2, abs=1e-6)
    loss, _ = _loss("kumpr", **{"kumpr.suffix_only": "true"})
    assert loss == pytest.approx(-LN2, abs=1e-6)


def test_icu_adds_alpha_nll_and_beta_kl_on_the_pair():
    """L = -ln 2 + 0.5 ln 2 + 1.0 x 0.0566 = -0.2900."""
    loss, terms = _loss("icu")
    assert loss == pytest.approx(-LN2 + 0.5 * LN2 + KL, abs=1e-6)
    assert terms["lrn"] == pytest.approx(LN2, abs=1e-6) and terms["kl"] == pytest.approx(
        KL, abs=1e-6
    )


@pytest.mark.parametrize(("alpha", "beta"), [(0, 1.0), (0.5, 0), (0, 0)])
def test_icu_ablations_drop_their_term(alpha, beta):
    loss, _ = _loss("icu", alpha=alpha, beta=beta)
    assert loss == pytest.approx(-LN2 + alpha * LN2 + beta * KL, abs=1e-6)


def test_kl_is_ascent_plus_beta_kl():
    """L = -ln 2 + 2 x 0.0566 = -0.5799 with beta = 2."""
    loss, _ = _loss("kl", beta=2)
    assert loss == pytest.approx(-LN2 + 2 * KL, abs=1e-6)


def test_llmu_weights_its_three_terms():
    """L = 0.5 (-ln 2) + 1 x (ln 4 + ln 2) / 2 + 1 x 0.0566 = 0.7498 (the paper's weights)."""
    loss, terms = _loss("llmu")
    mismatch = (math.log(4) + LN2) / 2
    assert terms["mismatch"] == pytest.approx(mismatch, abs=1e-6)
    assert loss == pytest.approx(-0.5 * LN2 + mismatch + KL, abs=1e-6)
    assert loss == pytest.approx(0.7498, abs=1e-4)


def test_npo_hand_worked():
    """log-ratio of the forget suffix: -2 ln 2 - 2 ln(1/3) = 2 ln(3/2) = 0.8109;
    L = (2 / 0.1) ln(1 + exp(0.1 x 0.8109)) = 20 ln(2.08447) = 14.690."""
    loss, terms = _loss("npo")
    ratio = 2 * math.log(1.5)
    assert terms["forget_logratio"] == pytest.approx(ratio, abs=1e-6)
    assert loss == pytest.approx(20 * math.log(1 + math.exp(0.1 * ratio)), abs=1e-4)
    assert loss == pytest.approx(14.690, abs=1e-3)


def test_dpo_hand_worked():
    """refusal log-ratio ln(1/8) - 2 ln(1/3) = ln(9/8); forget log-ratio ln(9/4);
    L = -ln sigmoid(0.1 (ln(9/8) - ln(9/4))) = -ln sigmoid(-0.1 ln 2) = ln(1 + 2^0.1) = 0.7284."""
    loss, terms = _loss("dpo")
    assert terms["refusal_logratio"] == pytest.approx(math.log(9 / 8), abs=1e-6)
    assert loss == pytest.approx(math.log(1 + 2**0.1), abs=1e-6)
    assert loss == pytest.approx(0.7284, abs=1e-4)


def test_dpo_beta_is_configurable():
    loss, _ = _loss("dpo", **{"dpo.beta": 0.5})
    assert loss == pytest.approx(math.log(1 + 2**0.5), abs=1e-6)


def test_registry_declares_what_each_method_needs():
    config = load_config(None, [])
    needs = {name: m.needs(config) for name, m in METHODS.items()}
    assert needs == {
        "icu": {PAIRS},
        "kumpr": set(),
        "kl": {PAIRS},
        "llmu": {PAIRS, MISMATCH},
        "dpo": {REFUSAL},
        "npo": set(),
    }
    assert [n for n, m in METHODS.items() if m.refines] == ["icu"]
    assert not METHODS["icu"].needs(load_config(None, ["alpha=0", "beta=0"]))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_token_floor_bounds_exactly_the_methods_that_say_they_ascend(method):
    # every scored forget token has log P = -ln 2 (suffix and, for KUMPR, prefix alike);
    # a floor of 0 above all of them turns the ascent term's -ln 2 into |-ln 2 - 0| = +ln 2
    floored = dict(BATCHES)
    forget = BATCHES["forget"]
    floored["forget"] = Batch(
        forget.input_ids, forget.attention_mask, forget.prefix_lengths, torch.zeros(1, 3)
    )
    plain_loss, plain = _loss(method)
    floor_loss, terms = _loss(method, floored)
    if METHODS[method].ascends:
        assert plain["fgt"] == pytest.approx(-LN2) and terms["fgt"] == pytest.approx(LN2)
        assert floor_loss > plain_loss + 0.5  # the flipped term is in the loss (LLMU: x 0.5)
    else:
        assert floor_loss == plain_loss and terms == plain
