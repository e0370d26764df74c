"""The one batched log-likelihood engine: (context, continuation) -> log P(continuation | context).

The lm-evaluation-harness convention throughout: a request is tokenised as the whole
string and split at the context's token count, so the continuation's tokens are the
ones the model would see in running text; requests are sorted longest-first,
batched with right padding, and returned in the caller's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...generation import longest_first, model_device, right_pad


class Score(NamedTuple):
    logprob: float  # sum of log P(token | everything before) over the continuation
    is_greedy: bool  # every continuation token is the argmax at its position
    greedy: list[int]  # the argmax tokens at the continuation's positions


def encode_requests(
    tokenizer: PreTrainedTokenizerBase, requests: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per request, the harness's way.

    Trailing spaces of the context move to the front of the continuation (BPE
    tokenizers attach a space to the word after it); context + continuation is
    encoded whole and split at the context's own token count. An empty context
    becomes the EOS token, so the first continuation token has something to follow.
    """
    contexts, wholes = [], []
    for context, continuation in requests:
        stripped = context.rstrip()
        contexts.append(stripped)
        wholes.append(stripped + context[len(stripped) :] + continuation)
    context_ids = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(wholes, add_special_tokens=False)["input_ids"]
    encoded = []
    for context, ctx, whole in zip(contexts, context_ids, whole_ids, strict=True):
        if context:
            encoded.append((ctx, whole[len(ctx) :]))
        else:
            encoded.append(([tokenizer.eos_token_id], whole))
    return encoded


@torch.inference_mode()
def loglikelihoods(
    model: PreTrainedModel,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_token_id: int,
    batch_size: int = 16,
    max_length: int | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> list[Score]:
    """Score every (context ids, continuation ids) request; results in the input order.

    The model reads (context + continuation)[:-1], cut from the left to its last
    `max_length` tokens. Requests with the same model input (a shared context and
    one-token continuations: " yes" / " no" / " maybe") share one forward pass.
    `on_batch(n)` is called after each batch with the number of requests it served.
    """
    inputs: dict[tuple[int, ...], list[int]] = {}  # model input -> requests it serves
    for i, (context, continuation) in enumerate(requests):
        if not continuation:
            raise ValueError(f"request {i} has an empty continuation; nothing to score")
        window = list(context) + list(continuation)
        if max_length is not None:
            if len(continuation) > max_length:
                raise ValueError(
                    f"request {i}: a {len(continuation)}-token continuation exceeds "
                    f"the {max_length}-token window"
                )
            window = window[-(max_length + 1) :]
        inputs.setdefault(tuple(window[:-1]), []).append(i)
    unique = list(inputs)
    device = model_device(model)
    scores: list[Score | None] = [None] * len(requests)
    for batch in longest_first([len(u) for u in unique], batch_size):
        ids, mask = right_pad([unique[b] for b in batch], pad_token_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        served = 0
        for row, b in enumerate(batch):
            length = len(unique[b])
            for i in inputs[unique[b]]:
                target = torch.as_tensor(requests[i][1], device=device)  # (n,)
                logp = torch.log_softmax(logits[row, length - len(target) : length].float(), -1)
                greedy = logp.argmax(-1)  # (n,)
                scores[i] = Score(
                    float(logp.gather(-1, target[:, None]).sum()),
                    bool((greedy == target).all()),
                    greedy.tolist(),
                )
                served += 1
        if on_batch is not None:
            on_batch(served)
    return scores
