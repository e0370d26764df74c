"""Batched greedy and beam generation, and the batching every model call shares.

Requests are sorted longest-first (`longest_first`), batched, and returned in the
caller's order (the lm-evaluation-harness convention), so padding waste stays small and
the first batch fails fast if memory is short. Teacher-forced scoring is `scoring.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel


def model_device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int, device=None):
    """(B, T) ids and attention mask, real tokens first; positions stay 0..T_i-1."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device=None):
    """(B, T) ids and attention mask, real tokens last, as generation needs."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = torch.as_tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def decoding_config(max_new_tokens: int, pad_token_id: int, num_beams: int = 1) -> GenerationConfig:
    """Deterministic decoding of exactly `max_new_tokens` tokens.

    `eos_token_id=[]` turns end-of-sequence stopping off: an empty setting would be
    filled in from the model's own generation config. The metrics compare
    continuations of a fixed length, and the fast paths treat EOS as any token.
    """
    return GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        eos_token_id=[],
        pad_token_id=pad_token_id,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    )


def longest_first(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices, longest request first (ties by index): padding stays small and
    the first batch, the largest, fails fast when memory is short. Callers restore order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


@torch.inference_mode()
def generate_continuations(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int | Sequence[int],
    pad_token_id: int,
    num_beams: int = 1,
    batch_size: int = 16,
) -> list[list[int]]:
    """Greedy (or beam) continuation of each prompt, `max_new_tokens[i]` tokens long."""
    if isinstance(max_new_tokens, int):
        max_new_tokens = [max_new_tokens] * len(prompts)
    device = model_device(model)
    results: list[list[int]] = [[] for _ in prompts]
    for batch in longest_first([len(p) for p in prompts], batch_size):
        ids, mask = left_pad([prompts[i] for i in batch], pad_token_id, device)
        steps = max(max_new_tokens[i] for i in batch)
        if steps == 0:
            continue
        cfg = decoding_config(steps, pad_token_id, num_beams)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
        new = out[:, ids.shape[1] :].tolist()  # (B, steps)
        for row, i in enumerate(batch):
            results[i] = new[row][: max_new_tokens[i]]
    return results
