"""`precision`: bf16 enters autocast (and scores on bfloat16 weights), fp32 enters nothing;
bad values are refused."""

from __future__ import annotations

import copy

import pytest
import torch

from icu_unlearn import precision
from icu_unlearn.audit import AuditSettings, cache
from icu_unlearn.audit.measure import Context
from icu_unlearn.errors import UsageError
from icu_unlearn.precision import autocast, check_precision, inference
from icu_unlearn.scoring import teacher_forced
from tests.conftest import tiny_llama


def test_fp32_enters_no_context_and_bf16_autocasts_the_matrix_products():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert layer(x).dtype == torch.float32
    with autocast("bf16", torch.device("cpu")):
        assert layer(x).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # the weights stay float32


def test_bad_precision_is_refused_in_one_line():
    check_precision("bf16")
    with pytest.raises(UsageError, match="precision must be fp32 or bf16, got 'fp16'"):
        check_precision("fp16")
    with pytest.raises(UsageError):
        autocast("float16", "cpu")


def test_auto_is_bf16_exactly_where_the_cpu_has_native_bfloat16(tmp_path, monkeypatch):
    """`auto` (the demo's default) reads the CPU's flags; fp32 and bf16 pass through;
    auto is refused where it is not offered."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    flags = {"avx512_bf16": "bf16", "amx_bf16": "bf16", "avx512f": "fp32", "": "fp32"}
    real_open = open
    for flag, expected in flags.items():
        cpuinfo = tmp_path / f"cpuinfo-{flag}"
        cpuinfo.write_text(f"processor : 0\nflags : fpu sse2 avx2 {flag}\n")
        monkeypatch.setattr(
            "builtins.open",
            lambda path, *a, f=cpuinfo, **k: real_open(
                f if path == "/proc/cpuinfo" else path, *a, **k
            ),
        )
        assert precision.resolve("auto") == expected, flag
        assert precision.resolve("fp32") == "fp32" and precision.resolve("bf16") == "bf16"
    monkeypatch.setattr("builtins.open", real_open)
    with pytest.raises(UsageError, match="must be fp32 or bf16, got 'auto'"):
        check_precision("auto")
    with pytest.raises(UsageError, match="must be fp32, bf16 or auto, got 'fp16'"):
        precision.resolve("fp16")


def test_bf16_scores_are_close_to_fp32_and_not_the_same():
    """The teacher-forced pass under bf16: float32 log-probs of bf16-rounded logits, within
    bf16's rounding of fp32's (8 mantissa bits: ~0.4% a logit) and not bit for bit equal."""
    model = tiny_llama().eval()
    seqs = [[int(t) for t in torch.randint(0, 64, (12,), generator=torch.Generator().manual_seed(s))]
            for s in range(3)]  # fmt: skip
    fp32 = teacher_forced(model, seqs, 0, token_logprobs=True)
    default = teacher_forced(model, seqs, 0, token_logprobs=True, precision="fp32")
    bf16 = teacher_forced(model, seqs, 0, token_logprobs=True, precision="bf16")
    for a, b, c in zip(fp32.token_logprobs, default.token_logprobs, bf16.token_logprobs,
                       strict=True):  # fmt: skip
        assert torch.equal(a, b)  # fp32 is the default, bit for bit
        assert c.dtype == torch.float32
        torch.testing.assert_close(c, a, atol=0.1, rtol=0.05)
    pairs = zip(fp32.token_logprobs, bf16.token_logprobs, strict=True)
    assert any(not torch.equal(a, c) for a, c in pairs)  # autocast ran


def test_the_reference_cache_keeps_bf16_and_fp32_measurements_apart(gpt2):
    """bf16 measures other numbers: a cached fp32 measurement of the reference must not
    answer a bf16 audit (the key holds every measuring setting, precision included)."""

    def key(precision: str) -> str:
        ctx = Context(gpt2, AuditSettings(precision=precision))
        return cache.entry_key("weights:x", "forget", [], ctx, 64)

    assert key("fp32") == key("fp32") != key("bf16")


def test_bf16_scoring_runs_on_bfloat16_weights_and_gives_the_float32_ones_back():
    """`inference("bf16", model)`: inside, every float32 weight is bfloat16 and the forward
    equals a bfloat16 copy of the model's under autocast; after (an exception included),
    the very float32 tensors are back, bit for bit; nested, nothing is copied twice."""
    model = tiny_llama().eval()
    before = {name: (p.data_ptr(), p.data.clone()) for name, p in model.named_parameters()}
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    twin = copy.deepcopy(model).to(torch.bfloat16)
    with torch.inference_mode(), autocast("bf16", "cpu"):
        expected = twin(input_ids=ids).logits
    with torch.inference_mode(), inference("bf16", model):
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        inner = [p.data_ptr() for p in model.parameters()]
        with inference("bf16", model):  # nested: the same bfloat16 tensors
            assert [p.data_ptr() for p in model.parameters()] == inner
        got = model(input_ids=ids).logits
    assert torch.equal(got, expected)
    with pytest.raises(RuntimeError, match="inside"), inference("bf16", model):
        raise RuntimeError("inside")
    for name, p in model.named_parameters():
        pointer, values = before[name]
        assert p.dtype == torch.float32 and p.data_ptr() == pointer
        assert torch.equal(p.data, values)
    with inference("fp32", model):  # fp32: nothing swapped, no autocast
        assert not torch.is_autocast_enabled("cpu")
        assert all(p.data_ptr() == before[n][0] for n, p in model.named_parameters())
