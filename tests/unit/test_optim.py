"""The training loops' Adam: fused on CPU, and the same steps as the single-tensor Adam
within the last bits."""

from __future__ import annotations

import torch

from icu_unlearn.optim import adam
from tests.conftest import tiny_llama


def _train(model, optimizer, steps: int = 12):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 64, (3, 9), generator=g)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_fused_step_follows_the_single_tensor_step():
    fused_model, plain_model = tiny_llama(seed=4), tiny_llama(seed=4)
    optimizer = adam(fused_model.parameters(), lr=1e-2, betas=(0.9, 0.98))
    assert optimizer.defaults["fused"] is True
    fused = _train(fused_model, optimizer)
    plain = _train(
        plain_model,
        torch.optim.Adam(plain_model.parameters(), lr=1e-2, betas=(0.9, 0.98), foreach=False),
    )
    moved = 0
    for key, value in plain.items():
        torch.testing.assert_close(fused[key], value, rtol=1e-4, atol=1e-5)
        moved += int(not torch.equal(value, tiny_llama(seed=4).state_dict()[key]))
    assert moved > 0  # the steps did train


def test_the_fused_step_is_deterministic():
    first, second = tiny_llama(seed=5), tiny_llama(seed=5)
    a = _train(first, adam(first.parameters(), lr=1e-2))
    b = _train(second, adam(second.parameters(), lr=1e-2))
    assert all(torch.equal(a[k], b[k]) for k in a)
