"""One teacher-forced forward pass per batch of sequences: every number the audit reads
off the model's next-token distributions at the true tokens.

Sequences are prefix + suffix token ids; the logits at positions t0-1 .. T-2
predict the suffix s_0..s_{m-1}. Batches go longest first (the engine of
`generation.py`), right-padded, and come back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..generation import model_device, right_pad
from .extraction import suffix_logprob
from .membership import vocabulary_moments
from .settings import SamplingScheme


@dataclass
class SuffixScores:
    """One sequence's teacher-forced suffix statistics."""

    logprobs: torch.Tensor  # (m,) log p(s_j | prefix, s_<j), float32
    hits: list[bool]  # the argmax after prefix + s_<j is s_j
    mu: torch.Tensor  # (m,) E_{z~p}[log p(z)] at each suffix position (Min-K%++)
    sigma: torch.Tensor  # (m,) its standard deviation
    scheme_logp: list[float]  # log P_S(suffix | prefix) for each scheme S (natural log)
    ma: float  # Eq. 9: argmax accuracy over positions 1..T-1 of the whole sequence


@torch.inference_mode()
def suffix_scores(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    prefix_lengths: Sequence[int],
    pad_token_id: int,
    schemes: Sequence[SamplingScheme],
    batch_size: int = 8,
) -> list[SuffixScores]:
    """SuffixScores of every sequence, in input order."""
    device = model_device(model)
    results: list[SuffixScores | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
    for batch in (order[k : k + batch_size] for k in range(0, len(order), batch_size)):
        ids, mask = right_pad([sequences[i] for i in batch], pad_token_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, W, V)
        for row, i in enumerate(batch):
            length, t0 = len(sequences[i]), prefix_lengths[i]
            predicted = logits[row, : length - 1].float()  # (T-1, V): predicts x_1..x_{T-1}
            target = ids[row, 1:length]
            hits = predicted.argmax(-1) == target
            # hits over positions, as Eq. 9 counts them (equal to memorization_accuracy)
            ma = int(hits.sum()) / (length - 1)
            logits_s, target_s = predicted[t0 - 1 :], target[t0 - 1 :]  # (m, V), (m,)
            logp = logits_s.log_softmax(-1)
            mu, sigma = vocabulary_moments(logp)
            results[i] = SuffixScores(
                logprobs=logp.gather(-1, target_s[:, None]).squeeze(-1).cpu(),
                hits=hits[t0 - 1 :].tolist(),
                mu=mu.cpu(),
                sigma=sigma.cpu(),
                scheme_logp=[suffix_logprob(logits_s, target_s, s) for s in schemes],
                ma=ma,
            )
    return results
