"""The reference target on a tiny model: trained on its forget term alone, a memorized
sequence ends at the reference model's suffix NLL and MA (and, with `prefix_weight`, its
prefix's), where ascent at the same rate overshoots far below the reference's likelihood."""

from __future__ import annotations

import copy

import torch

from icu_unlearn.methods.base import Batch, forget_term
from icu_unlearn.scoring import teacher_forced
from tests.conftest import tiny_llama

T0 = 8  # prefix tokens; 12 suffix tokens
# |suffix NLL - the reference's| a record must end within, nats a token
NLL_TOLERANCE = 0.5


def _reference():
    """A random tiny model with confident next-token distributions, as a trained model has
    (its LM head scaled up): a random model's are near uniform, where the argmax, and so
    MA, turns on differences of a thousandth."""
    model = tiny_llama(seed=1)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model


def _sequences() -> list[list[int]]:
    g = torch.Generator().manual_seed(3)
    return [torch.randint(3, 64, (20,), generator=g).tolist() for _ in range(3)]


def _memorize(model, sequences, steps: int = 150):
    """The reference (a random tiny model) with the sequences planted: the subject."""
    planted = copy.deepcopy(model).train()
    opt = torch.optim.Adam(planted.parameters(), lr=1e-2)
    ids = torch.tensor(sequences)
    for _ in range(steps):
        opt.zero_grad()
        planted(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    return planted.eval()


def _batch(sequences, reference=None, prefix_weight: float = 0.0) -> Batch:
    ids = torch.tensor(sequences)
    mask = torch.ones_like(ids)
    t0 = torch.full((len(sequences),), T0)
    target = None
    if reference is not None:
        with torch.no_grad():
            target = torch.log_softmax(reference(input_ids=ids).logits.float(), -1)
    return Batch(ids, mask, t0, target=target, prefix_weight=prefix_weight)


def _scores(model, sequences):
    scored = teacher_forced(model, sequences, 0, [T0] * len(sequences), suffix_nll=True)
    suffix_ma = [sum(h[T0 - 1 :]) / len(h[T0 - 1 :]) for h in scored.hits]
    return scored.suffix_nll, suffix_ma


def _prefix_scores(model, sequences):
    """Per sequence the prefix's NLL (x_1 .. x_{t0-1}, nats a token) and its MA."""
    scored = teacher_forced(model, sequences, 0, token_logprobs=True)
    nll = [-float(lp[: T0 - 1].mean()) for lp in scored.token_logprobs]
    return nll, [sum(h[: T0 - 1]) / (T0 - 1) for h in scored.hits]


def _train(model, batch, steps: int = 150, lr: float = 3e-3):
    model = copy.deepcopy(model).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        logits = model(input_ids=batch.input_ids).logits
        forget_term(logits, batch).backward()
        opt.step()
    return model.eval()


def test_the_reference_target_ends_at_the_reference_where_ascent_overshoots():
    reference = _reference()
    sequences = _sequences()
    planted = _memorize(reference, sequences)
    ref_nll, ref_ma = _scores(reference, sequences)
    planted_nll, planted_ma = _scores(planted, sequences)
    assert max(planted_nll) < 0.5 and min(planted_ma) == 1.0  # memorized

    matched = _train(planted, _batch(sequences, reference, prefix_weight=1.0))
    nll, ma = _scores(matched, sequences)
    for i in range(len(sequences)):
        assert abs(nll[i] - ref_nll[i]) <= NLL_TOLERANCE, (i, nll, ref_nll)
        assert abs(ma[i] - ref_ma[i]) <= 1 / 12, (i, ma, ref_ma)  # one token at most
    # the prefix, learnt with the record, ends at the reference's too (prefix_weight 1),
    # where the KL alone leaves it far from it
    ref_prefix_nll, ref_prefix_ma = _prefix_scores(reference, sequences)
    planted_prefix_nll, _ = _prefix_scores(planted, sequences)
    prefix_nll, prefix_ma = _prefix_scores(matched, sequences)
    assert max(planted_prefix_nll) < 0.5 < min(ref_prefix_nll)
    for i in range(len(sequences)):
        assert abs(prefix_nll[i] - ref_prefix_nll[i]) <= NLL_TOLERANCE, (i, prefix_nll)
        assert abs(prefix_ma[i] - ref_prefix_ma[i]) <= 1 / (T0 - 1), (i, prefix_ma, ref_prefix_ma)
    kl_only, _ = _prefix_scores(_train(planted, _batch(sequences, reference)), sequences)
    assert max(abs(a - b) for a, b in zip(kl_only, ref_prefix_nll, strict=True)) > NLL_TOLERANCE

    ascended = _train(planted, _batch(sequences))
    nll_ascent, _ = _scores(ascended, sequences)
    assert min(n - r for n, r in zip(nll_ascent, ref_nll, strict=True)) > 4 * NLL_TOLERANCE
