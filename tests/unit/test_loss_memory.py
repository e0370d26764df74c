"""The suffix-only, chunked losses equal the slow full-logit reference (tests/loss_reference.py):
loss values and gradients w.r.t. every model parameter, on tiny Llama and GPT-Neo models,
with a different t0 per sample and right padding, and with chunks small enough that every
batch spans several of them (the last one short)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from icu_unlearn import losses
from icu_unlearn.config import LoraConfig, load_config
from icu_unlearn.methods import METHODS
from icu_unlearn.methods.base import (
    MISMATCH,
    PAIRS,
    REFUSAL,
    Batch,
    logits,
    original_suffix_logits,
    suffix_logits,
)
from tests import loss_reference as ref
from tests.conftest import TINY_MODELS

VOCAB = 97  # odd, so no chunk boundary lines up with anything by luck


def _batch(lengths, t0s, seed):
    """Right-padded random sequences: row b has lengths[b] real tokens and t0 = t0s[b]."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(3, VOCAB, (len(lengths), width), generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        ids[row, length:] = 0  # pad id
    return Batch(ids, mask, torch.tensor(t0s))


BATCHES = {
    "forget": _batch([12, 9, 11], [4, 6, 3], seed=1),
    PAIRS: _batch([10, 12, 7], [5, 2, 4], seed=2),
    MISMATCH: _batch([12, 12, 8], [4, 6, 3], seed=3),
    REFUSAL: _batch([8, 10, 9], [4, 6, 3], seed=4),
}


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    """Two positions per chunk at batch 3, so every loss runs over several chunks."""
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 3 * VOCAB * 2)


@pytest.fixture(params=sorted(TINY_MODELS))
def models(request):
    build = TINY_MODELS[request.param]
    reference = build(VOCAB, seed=1).requires_grad_(False)
    return build(VOCAB, seed=0), reference


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(model, new, old):
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)
    new_grads, old_grads = _grads(model, new), _grads(model, old)
    assert new_grads.keys() == old_grads.keys() and new_grads
    for name in old_grads:
        torch.testing.assert_close(new_grads[name], old_grads[name], rtol=1e-4, atol=1e-6)


METHOD_CASES = [
    ("icu", []),
    ("kumpr", []),
    ("kumpr", ["kumpr.suffix_only=true"]),
    ("kl", []),
    ("llmu", []),
    ("dpo", ["dpo.beta=0.5"]),  # a larger beta than the default gives a larger gradient
    ("npo", ["npo.beta=0.5"]),
]


@pytest.mark.parametrize(("method", "overrides"), METHOD_CASES)
def test_every_method_equals_the_full_logit_reference(models, method, overrides):
    model, reference = models
    config = load_config(None, overrides)
    new, _ = METHODS[method].loss(model, reference, BATCHES, config)
    old = ref.method_loss(method, model, reference, BATCHES, config)
    _assert_same(model, new, old)


@pytest.mark.parametrize("kind", [PAIRS, "forget"])
def test_each_loss_function_equals_the_reference(models, kind):
    """forget, nll, kl and the DPO/NPO sum, each alone, from suffix logits vs full ones."""
    model, reference = models
    batch = BATCHES[kind]
    args = (batch.input_ids, batch.attention_mask, batch.prefix_lengths)
    cases = [
        (losses.forget_loss, ref.forget_loss),
        (losses.nll_loss, ref.nll_loss),
        (
            lambda *a: losses.suffix_logprob_sum(*a).sum(),
            lambda *a: ref.suffix_logprob_sum(*a).sum(),
        ),
    ]
    for new_fn, old_fn in cases:
        _assert_same(
            model,
            new_fn(suffix_logits(model, batch), *args),
            old_fn(ref.logits(model, batch), *args),
        )
    new = losses.kl_loss(
        suffix_logits(model, batch), original_suffix_logits(reference, batch), *args[1:]
    )
    old = ref.kl_loss(ref.logits(model, batch), ref.reference_logits(reference, batch), *args[1:])
    assert old.item() > 0  # two different models: a KL to get right
    _assert_same(model, new, old)


def test_full_logits_give_the_same_losses_as_suffix_logits(models):
    """A caller with every position's logits (K = T) gets the same numbers."""
    model, reference = models
    batch = BATCHES[PAIRS]
    args = (batch.input_ids, batch.attention_mask, batch.prefix_lengths)
    whole, suffix = logits(model, batch), suffix_logits(model, batch)
    torch.testing.assert_close(suffix, whole[:, -suffix.shape[1] :])
    for fn in (losses.forget_loss, losses.suffix_logprob_sum):
        torch.testing.assert_close(fn(whole, *args), fn(suffix, *args))
    ref_whole = ref.reference_logits(reference, batch)
    torch.testing.assert_close(
        losses.kl_loss(whole, ref_whole, *args[1:]),
        losses.kl_loss(suffix, original_suffix_logits(reference, batch), *args[1:]),
    )


def test_the_lm_head_runs_on_the_suffix_positions_only(models):
    """t0 = 4, 6, 3 in a 12-wide batch: positions 2 .. 11 (K = 12 - 3 + 1 = 10) reach the head."""
    model, _ = models
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, inputs, output: seen.append(tuple(inputs[0].shape))
    )
    try:
        suffix_logits(model, BATCHES["forget"])
    finally:
        hook.remove()
    assert seen == [(3, 10, model.config.hidden_size)]


def test_too_few_positions_is_an_error():
    batch = BATCHES["forget"]
    short = torch.zeros(3, 9, VOCAB)  # K = 10 needed
    with pytest.raises(ValueError, match="keep 10"):
        losses.forget_loss(short, batch.input_ids, batch.attention_mask, batch.prefix_lengths)


def test_chunked_gradients_pass_gradcheck(monkeypatch):
    """The hand-written backward passes of the chunked log-prob and KL, in float64,
    against finite differences; three positions per chunk over five."""
    generator = torch.Generator().manual_seed(0)
    logits_ = torch.randn(2, 6, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    reference = torch.randn(2, 6, 5, dtype=torch.float64, generator=generator)
    targets = torch.randint(0, 5, (2, 5), generator=generator)
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 2 * 5 * 3)
    assert torch.autograd.gradcheck(lambda z: losses._TokenLogprobs.apply(z, targets), (logits_,))
    assert torch.autograd.gradcheck(lambda z: losses._TokenKL.apply(z, reference), (logits_,))


def test_a_reference_that_requires_grad_is_refused():
    z = torch.zeros(1, 3, 4, requires_grad=True)
    with pytest.raises(ValueError, match="must not require grad"):
        losses.kl_loss(z, z, torch.ones(1, 3, dtype=torch.long), torch.tensor([1]))


def test_suffix_logits_pass_through_peft_and_adapters_off():
    """`logits_to_keep` reaches the model through a peft LoraModel and its adapters-off
    reference (the LoRA path of train.py)."""
    from icu_unlearn import lora

    adapted = lora.add_adapters(TINY_MODELS["llama"](VOCAB), LoraConfig(r=2))
    batch = BATCHES["forget"]
    kept = suffix_logits(adapted, batch)
    assert kept.shape == (3, 10, VOCAB)
    torch.testing.assert_close(kept, logits(adapted, batch)[:, -10:])
    off = original_suffix_logits(lora.AdaptersOff(adapted), batch)
    assert off.shape == kept.shape and not off.requires_grad


class _FixedLogits(torch.nn.Module):
    """A 'model' whose logits are a parameter: the gradient w.r.t. each position's logits
    is that parameter's gradient."""

    def __init__(self, batch, vocab):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(*batch.input_ids.shape, vocab))

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        return SimpleNamespace(logits=self.logits[:, -logits_to_keep:])


@pytest.mark.parametrize("suffix_only", [False, True])
def test_kumpr_ascends_on_the_prefix_by_default(suffix_only):
    """Jang et al. ascend on every token x_t, t >= 1: the prefix tokens' log-probabilities
    (positions 0 .. t0-2 predict x_1 .. x_{t0-1}) get gradient by default, none with
    `kumpr.suffix_only`; the suffix positions get gradient either way."""
    batch = BATCHES["forget"]
    model = _FixedLogits(batch, VOCAB)
    config = load_config(None, [f"kumpr.suffix_only={str(suffix_only).lower()}"])
    loss, _ = METHODS["kumpr"].loss(model, None, {"forget": batch}, config)
    loss.backward()
    per_position = model.logits.grad.abs().sum(-1)  # (B, T)
    for row, t0 in enumerate(batch.prefix_lengths.tolist()):
        prefix, suffix = per_position[row, : t0 - 1], per_position[row, t0 - 1 : t0]
        if suffix_only:
            assert prefix.max() == 0
        else:
            assert prefix.min() > 0
        assert suffix.min() > 0


def test_activation_checkpointing_in_eval_mode_recomputes_and_gives_the_same_gradients(models):
    """Dropout off (eval mode) with checkpointing: each decoder layer runs again in
    backward (so its activations were not held), and ICU's loss and gradients are those
    of the plain eval-mode pass."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from icu_unlearn.train import _checkpoint_in_eval_mode

    model, reference = models
    config = load_config(None, [])
    model.eval()
    plain, _ = METHODS["icu"].loss(model, reference, BATCHES, config)
    plain_grads = _grads(model, plain)

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    calls = []
    # a layer's own hooks stay outside the checkpoint; its submodules' run again in backward
    inner = [next(m.children()) for m in layers]
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in inner]
    model.activation_checkpointing_enable({"use_reentrant": False})
    _checkpoint_in_eval_mode(model)
    assert layers and not any(m.training for m in model.modules() if m not in layers)
    checkpointed, _ = METHODS["icu"].loss(model, reference, BATCHES, config)
    forward_calls = len(calls)
    grads = _grads(model, checkpointed)
    assert len(calls) > forward_calls  # the layers' forward ran again in backward
    for h in hooks:
        h.remove()
    torch.testing.assert_close(checkpointed, plain, rtol=0, atol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7)
