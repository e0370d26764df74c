"""The optimizer of every training loop: a run, `memorize`, the relearning attack."""

from __future__ import annotations

from collections.abc import Iterable

import torch

# Devices with torch's fused Adam kernel: one pass over each tensor per step, 3.2 times the
# single-tensor step on SmolLM2-135M's parameters at one CPU thread
# (benchmarks/results/adam_step_1threads.md), and no temporary of the model's size (the multi-tensor
# `foreach` step allocates one per parameter group, on top of weights, gradients and moments).
FUSED_DEVICES = ("cpu", "cuda")


def adam(params: Iterable[torch.nn.Parameter], lr: float, betas=(0.9, 0.999)) -> torch.optim.Adam:
    """torch's Adam, fused where the parameters' device has the kernel, else single-tensor.
    The two steps differ in the last bit of a few elements (tested); each is deterministic."""
    params = list(params)
    fused = bool(params) and {p.device.type for p in params} <= set(FUSED_DEVICES)
    step = {"fused": True} if fused else {"foreach": False}
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), **step)
