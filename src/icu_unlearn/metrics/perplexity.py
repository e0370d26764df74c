"""Perplexity of token sequences: exp of the mean negative log-likelihood per predicted token."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..scoring import teacher_forced


def perplexity(model, sequences: Sequence[Sequence[int]], pad_token_id: int, batch_size=16):
    """Corpus perplexity: every predicted token of every sequence weighs the same."""
    return perplexity_from(*log_likelihood(model, sequences, pad_token_id, batch_size))


def log_likelihood(model, sequences, pad_token_id: int, batch_size=16) -> tuple[float, int]:
    """The summed log-probability of the predicted tokens, and their number: what
    processes that each scored a share add up before `perplexity_from`."""
    nll = sequence_nll(model, sequences, pad_token_id, batch_size)
    return -sum(nll), sum(len(s) - 1 for s in sequences)


def sequence_nll(model, sequences, pad_token_id: int, batch_size=16) -> list[float]:
    """Each sequence's summed negative log-likelihood of its predicted tokens (t >= 1)."""
    if not sequences:
        return []
    scored = teacher_forced(
        model, sequences, pad_token_id, batch_size=batch_size, token_logprobs=True
    )
    return [-float(lp.double().sum()) for lp in scored.token_logprobs]


def perplexity_from(total: float, count: int) -> float:
    if count == 0:
        raise ValueError("perplexity needs sequences of at least two tokens")
    return math.exp(-total / count)
