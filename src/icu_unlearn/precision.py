"""`precision: fp32 | bf16`: the dtype the forward passes compute in.

bf16 runs the model's matrix products under `torch.autocast` (bfloat16) on the model's
device; the weights, the optimizer's state and every loss stay float32 (`losses.py`
widens logits to float32 before a log-softmax), and backward runs outside autocast.
fp32 enters no context at all, so that its numbers stay bit for bit what they were.
"""

from __future__ import annotations

import contextlib

from .errors import UsageError

PRECISIONS = ("fp32", "bf16")

# the settings' help (eval, audit, memorize, demo); the run's key says it in its own words
HELP = (
    "fp32 or bf16: bf16 computes the forward passes under autocast (float32 weights, "
    "optimizer state and losses); on a CPU with AVX-512 BF16 or a GPU it is faster, "
    "and scores move within bf16's rounding (benchmarks/results/bf16_demo.md)"
)


def check_precision(value: str, key: str = "precision") -> None:
    """A one-line refusal of anything but fp32 or bf16."""
    if value not in PRECISIONS:
        raise UsageError(f"{key} must be fp32 or bf16, got {value!r}")


def autocast(precision: str, device):
    """bf16: autocast to bfloat16 on `device`'s type; fp32: no context (nothing changes)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    check_precision(precision)
    import torch  # here: the config imports this module, and `run --help` skips torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
