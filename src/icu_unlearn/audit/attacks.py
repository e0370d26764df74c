"""Robustness attacks: what an attacker who holds the weights can do before extracting.

Each returns a changed deep copy; the input model's weights (and so its files)
are never touched.

* quantize (Zhang et al. 2025, "Catastrophic Failure of LLM Unlearning via
  Quantization"): 4-bit quantization brings back much of what utility-preserving
  unlearning removed, because the unlearning update is smaller than a
  quantization step. Simulated here in floating point (quantize, then
  dequantize at once), round-to-nearest, symmetric, group-wise: the RTN
  baseline of GPTQ (Frantar et al. 2023), which runs anywhere.
* bnb (the same attack with the quantization deployments use): the model loaded
  through transformers' BitsAndBytesConfig, NF4 for 4 bits (QLoRA's data type,
  blocks of 64 weights) and LLM.int8() for 8 (per-row int8, fp16 outliers). It
  needs the bitsandbytes package; it runs on CUDA and, slowly, on a CPU.
* relearn (Hu et al. 2025, "Unlearning or Obfuscating? Jogging the Memory of
  Unlearned LLMs via Benign Relearning"; Deeb & Roger 2024, "Do Unlearning
  Methods Remove Information from Language Model Weights?"): fine-tuning on part
  of the forgotten data brings back the rest when it was only hidden.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from ..errors import UsageError
from ..generation import model_device, right_pad
from ..losses import nll_loss


def quantize_weight(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Round-to-nearest symmetric quantization of a (out, in) weight, dequantized.

    Each run of `group_size` consecutive weights of an output row (the last group
    of a row may be shorter) shares the scale max|w| / (2^(bits-1) - 1); each
    weight becomes clamp(round(w / scale)) · scale, one of 2^bits - 1 levels
    symmetric about 0. An all-zero group stays zero.
    """
    out_features, in_features = weight.shape
    qmax = 2 ** (bits - 1) - 1
    padded = F.pad(weight.float(), (0, -in_features % group_size))  # zeros keep each max|w|
    groups = padded.view(out_features, -1, group_size)  # (out, groups, group_size)
    scale = groups.abs().amax(-1, keepdim=True) / qmax
    scale = scale.masked_fill(scale == 0, 1.0)  # all-zero group: 0 / 1 rounds to 0
    levels = (groups / scale).round().clamp(-qmax, qmax)
    return (levels * scale).view(out_features, -1)[:, :in_features].to(weight.dtype)


def quantize_model(model: PreTrainedModel, bits: int, group_size: int) -> PreTrainedModel:
    """A copy with every nn.Linear weight quantized, the output head excepted.

    GPTQ, AWQ and bitsandbytes keep the output head in full precision, and in a
    model with tied embeddings it is the input embedding too. Biases, norms and
    embeddings stay as they are.
    """
    attacked = copy.deepcopy(model)
    head = attacked.get_output_embeddings()
    with torch.no_grad():
        for module in attacked.modules():
            if isinstance(module, nn.Linear) and module is not head:
                module.weight.copy_(quantize_weight(module.weight, bits, group_size))
    return attacked.eval()


def require_bitsandbytes() -> None:
    """A one-line error, before any loading, where the bnb attacks cannot run."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError(
            "the bnb attacks need bitsandbytes: pip install 'icu-unlearn[quantize]' "
            "(or use quantize:BITS, simulated, which needs nothing)"
        ) from None


def bnb_quantize(model: PreTrainedModel, bits: int) -> PreTrainedModel:
    """The model as bitsandbytes quantizes it on loading: NF4 (`bits` 4) or LLM.int8() (8).

    The weights travel through a temporary folder, as a deployment loads them;
    transformers keeps the output head in full precision. Compute stays float32.
    """
    require_bitsandbytes()
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if bits == 4:
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    device = model_device(model)
    with tempfile.TemporaryDirectory(prefix="icu-bnb-") as folder:
        model.save_pretrained(folder, safe_serialization=True)
        attacked = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=config, device_map={"": str(device)}, dtype=torch.float32
        )
    return attacked.eval()


def relearn_split(count: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices to fine-tune on (half, rounded down) and to audit (the rest), seeded."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    half = count // 2
    return sorted(order[:half]), sorted(order[half:])


def relearn(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    pad_token_id: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> PreTrainedModel:
    """A copy fine-tuned for one epoch on `sequences`: NLL of every token after the
    first (whole sequences, as `memorize` plants them), Adam, seeded order."""
    attacked = copy.deepcopy(model)
    attacked.requires_grad_(True)
    attacked.train()
    optimizer = torch.optim.Adam(attacked.parameters(), lr=lr)
    order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(seed)).tolist()
    device = next(attacked.parameters()).device
    with torch.enable_grad():
        for k in range(0, len(order), batch_size):
            batch = [sequences[i] for i in order[k : k + batch_size]]
            ids, mask = right_pad(batch, pad_token_id, device)
            logits = attacked(input_ids=ids, attention_mask=mask).logits
            ones = torch.ones(len(batch), dtype=torch.long, device=device)
            loss = nll_loss(logits, ids, mask, ones)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return attacked.eval()
