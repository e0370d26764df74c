"""`precision: fp32 | bf16`: the dtype the forward passes compute in.

bf16 trains under `torch.autocast` (bfloat16) on the model's device: the weights, the
optimizer's state and every loss stay float32 (`losses.py` widens logits to float32
before a log-softmax), and backward runs outside autocast. Scoring (no gradient) runs
on bfloat16 copies of the weights made once per scoring call (`inference`), the float32
originals set aside and put back untouched: autocast alone casts every weight again at
every forward pass under inference mode, which left bf16 decoding at 1.1-1.3x float32's
speed where bfloat16 weights reach 1.9-2.8x (SmolLM2-135M, 32 rows, one thread, this
project's CPU). fp32 enters no context at all, so that its numbers stay bit for bit what
they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .errors import UsageError

PRECISIONS = ("fp32", "bf16")

# the settings' help (eval, audit, memorize, demo); the run's key says it in its own words
HELP = (
    "fp32 or bf16: bf16 scores on bfloat16 copies of the weights and trains under autocast "
    "(float32 weights, optimizer state and losses); on a CPU with AVX-512 BF16 or a GPU it "
    "is faster, and scores move within bf16's rounding (benchmarks/results/bf16_demo.md)"
)


def check_precision(value: str, key: str = "precision", auto: bool = False) -> None:
    """A one-line refusal of anything but fp32 or bf16 (or auto, where `auto`)."""
    if value not in PRECISIONS and not (auto and value == "auto"):
        allowed = "fp32, bf16 or auto" if auto else "fp32 or bf16"
        raise UsageError(f"{key} must be {allowed}, got {value!r}")


def bf16_native() -> bool:
    """Whether this machine computes bfloat16 natively: a CUDA GPU that says so, else a
    CPU with AVX-512 BF16 or AMX (Linux's /proc/cpuinfo flags). Elsewhere bf16 would be
    emulated, slower than fp32, so False."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve(value: str) -> str:
    """`auto` as bf16 where the machine computes it natively (`bf16_native`), else fp32."""
    check_precision(value, auto=True)
    if value != "auto":
        return value
    return "bf16" if bf16_native() else "fp32"


def autocast(precision: str, device):
    """bf16: autocast to bfloat16 on `device`'s type; fp32: no context (nothing changes)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    check_precision(precision)
    import torch  # here: the config imports this module, and `run --help` skips torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def inference(precision: str, model) -> Iterator[None]:
    """Scoring without gradients in `precision`: fp32 changes nothing; bf16 autocasts and
    swaps each float32 parameter of `model` for a bfloat16 copy for the duration, then
    puts the very float32 tensors back (bit for bit what they were, whatever happened
    inside). Nested calls see bfloat16 weights already and copy nothing."""
    if precision == "fp32":
        yield
        return
    check_precision(precision)
    import torch

    from .generation import model_device

    device = model_device(model)
    kept = [(p, p.data) for p in model.parameters() if p.dtype == torch.float32]
    try:
        for param, data in kept:
            param.data = data.to(torch.bfloat16)
        with autocast(precision, device):
            yield
    finally:
        for param, data in kept:
            param.data = data
