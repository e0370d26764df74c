"""`relearn_step`: each step's gradient taken where one Adam step of an attacker relearning
the step's forget sequences would take the weights, and applied where they were."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from icu_unlearn import distributed, load_config, unlearn
from icu_unlearn.data.forget import ForgetSample
from icu_unlearn.errors import UsageError
from icu_unlearn.train import _relearning_shift
from tests.conftest import tiny_llama


def _by_hand_gradient(model, sequences: list[list[int]]) -> list[torch.Tensor]:
    """The relearn attack's loss, written out: every token after the first of each whole
    sequence, mean over its tokens, then over the sequences."""
    model.zero_grad()
    losses = []
    for seq in sequences:
        ids = torch.tensor([seq])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        losses.append(-logp.gather(1, ids[0, 1:, None]).mean())
    torch.stack(losses).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def test_the_shift_is_one_sign_step_against_the_relearning_gradient_and_undoable():
    torch.manual_seed(0)
    model = tiny_llama(97, hidden_size=16, intermediate_size=32)
    sequences = [[5, 9, 13, 2, 40, 41, 7, 8], [11, 3, 3, 60, 61, 62]]  # two lengths: padding
    forget = {
        str(i): ForgetSample(str(i), tuple(s[:3]), tuple(s[3:]), "", "")
        for i, s in enumerate(sequences)
    }
    accelerator = Accelerator(cpu=True)
    step = 1e-3
    setup = SimpleNamespace(
        model=model, forget=forget, accelerator=accelerator,
        procs=distributed.Processes(accelerator), tokenizer=SimpleNamespace(pad_token_id=0),
        config=SimpleNamespace(relearn_step=step, precision="fp32"),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-4),
    )  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    grads = _by_hand_gradient(model, sequences)
    # one micro-batch of two, and two of one (gradient accumulation): the same shift
    for micro, micro_steps in ((2, 1), (1, 2)):
        held = _relearning_shift(setup, ["0", "1"], ["0", "1"], micro, micro_steps)
        for p, w, b, g in zip(model.parameters(), held, before, grads, strict=True):
            assert torch.equal(w, b)  # the weights as they were, for the return
            assert p.grad is None  # emptied for the step's own backward passes
            torch.testing.assert_close(p.detach(), b - step * torch.sign(g), rtol=0, atol=1e-9)
        with torch.no_grad():
            for p, w in zip(model.parameters(), held, strict=True):
                p.copy_(w)


def _weights(out):
    return load_file(out / "model" / "model.safetensors")


def test_the_step_is_applied_at_the_weights_as_they_were(scenario, tmp_path):
    """One epoch of one Adam step (its first moves no weight by more than lr): at a
    relearn_step ten times lr, no weight moved further than lr, so the shift was undone
    before the step; and the weights differ from the run without it, whose gradient was
    taken at the unshifted weights."""
    lr = 1e-4

    def run(name, step):
        keys = {
            "model": scenario["planted_model"], "forget": scenario["forget"],
            "analogous.pool": scenario["pool"], "prefix_length": 20, "lr": lr,
            "batch_size": 4, "max_epochs": 1, "relearn_step": step, "out": tmp_path / name,
        }  # fmt: skip
        config = load_config(None, [f"{k}={v}" for k, v in keys.items()])
        return unlearn(config, progress=False)

    shifted, plain = run("shifted", 10 * lr), run("plain", 0.0)
    assert shifted.manifest["config"]["relearn_step"] == 10 * lr
    assert shifted.epochs[0]["steps"] == plain.epochs[0]["steps"] == 1
    planted = load_file(scenario["planted_model"] / "model.safetensors")
    after, without = _weights(shifted.out), _weights(plain.out)
    moved = max((after[k] - planted[k]).abs().max().item() for k in planted)
    assert 0.5 * lr < moved <= lr * 1.001, moved
    assert any(not torch.equal(after[k], without[k]) for k in planted)


def test_a_negative_step_is_refused():
    with pytest.raises(UsageError, match="relearn_step must be 0"):
        load_config(None, ["relearn_step=-1e-4"])


def test_weights_whose_gradients_are_not_in_place_are_refused(scenario, tmp_path, monkeypatch):
    """Under DeepSpeed or FSDP the gradients live in the engine's buffers: one line, before
    anything is written (simulated: no distributed type counted as replicated)."""
    monkeypatch.setattr(distributed, "REPLICATED", ())
    keys = {"model": scenario["planted_model"], "forget": scenario["forget"], "relearn_step": 1e-4}
    config = load_config(None, [f"{k}={v}" for k, v in keys.items()] + [f"out={tmp_path / 'o'}"])
    with pytest.raises(UsageError, match="relearn_step needs the weights' gradients in place"):
        unlearn(config, progress=False)
    assert not (tmp_path / "o").exists()
