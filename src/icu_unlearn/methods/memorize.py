"""Planting (`icu-unlearn memorize`): gradient descent on whole sequences, to build test
subjects. The run stops when every sequence's MA reaches `memorize.target_ma`.

The paper's GPT-Neo models memorized the Pile in pre-training; any other model needs
this step before there is anything to forget.
"""

from __future__ import annotations

import torch

from ..losses import nll_loss
from .base import Method, logits


def _loss(model, original, batches, config):
    batch = batches["forget"]
    whole = torch.ones_like(batch.prefix_lengths)  # every token after the first, prefix too
    loss = nll_loss(logits(model, batch), batch.input_ids, batch.attention_mask, whole)
    return loss, {"nll": loss.item()}


METHOD = Method(
    name="memorize",
    summary="plant sequences: NLL of whole sequences until every MA reaches memorize.target_ma",
    needs=lambda c: set(),
    uses_original=lambda c: False,
    loss=_loss,
)
