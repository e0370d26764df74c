"""The slow, obviously-correct losses: every position's logits, one float32 log-softmax
over the whole (B, T-1, V), autograd for the gradients. The library's suffix-only,
chunked losses (`icu_unlearn.losses`) are held equal to these, values and gradients.

This is the code the library ran before the memory work, kept as the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from icu_unlearn.methods.base import MISMATCH, PAIRS, REFUSAL


def suffix_mask(attention_mask, prefix_lengths):
    """(B, T-1): predicted tokens x_t with t >= t0 that are not padding."""
    positions = torch.arange(1, attention_mask.shape[1], device=attention_mask.device)
    return ((positions[None, :] >= prefix_lengths[:, None]) & attention_mask[:, 1:].bool()).float()


def token_logprobs(logits, input_ids):
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def _masked_mean(values, mask):
    return ((values * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def forget_loss(logits, input_ids, attention_mask, prefix_lengths):
    return _masked_mean(
        token_logprobs(logits, input_ids), suffix_mask(attention_mask, prefix_lengths)
    )


def nll_loss(logits, input_ids, attention_mask, prefix_lengths):
    return -forget_loss(logits, input_ids, attention_mask, prefix_lengths)


def suffix_logprob_sum(logits, input_ids, attention_mask, prefix_lengths):
    mask = suffix_mask(attention_mask, prefix_lengths)
    return (token_logprobs(logits, input_ids) * mask).sum(-1)


def kl_loss(logits, reference_logits, attention_mask, prefix_lengths):
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    ref_logp = F.log_softmax(reference_logits[:, :-1].float(), dim=-1)
    per_token = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return _masked_mean(per_token, suffix_mask(attention_mask, prefix_lengths))


def logits(model, batch):
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def reference_logits(reference, batch):
    with torch.no_grad():
        return logits(reference, batch)


def _args(batch):
    return batch.input_ids, batch.attention_mask, batch.prefix_lengths


def _kl(model, reference, batch):
    return kl_loss(logits(model, batch), reference_logits(reference, batch), *_args(batch)[1:])


def method_loss(name, model, reference, batches, config):
    """Each method's loss as the library computed it before, from full logits."""
    forget = batches["forget"]
    if name == "kumpr":
        t0 = (
            forget.prefix_lengths
            if config.kumpr.suffix_only
            else torch.ones_like(forget.prefix_lengths)
        )
        return forget_loss(logits(model, forget), forget.input_ids, forget.attention_mask, t0)
    if name in ("npo", "dpo"):

        def ratio(batch):
            return suffix_logprob_sum(logits(model, batch), *_args(batch)) - suffix_logprob_sum(
                reference_logits(reference, batch), *_args(batch)
            )

        if name == "npo":
            beta = config.npo.beta
            return (2.0 / beta) * F.softplus(beta * ratio(forget)).mean()
        margin = ratio(batches[REFUSAL]) - ratio(forget)
        return F.softplus(-config.dpo.beta * margin).mean()
    l_fgt = forget_loss(logits(model, forget), *_args(forget))
    if name == "icu":
        learn = batches[PAIRS]
        learn_logits = logits(model, learn)
        l_lrn = nll_loss(learn_logits, *_args(learn))
        l_kl = kl_loss(learn_logits, reference_logits(reference, learn), *_args(learn)[1:])
        return l_fgt + config.alpha * l_lrn + config.beta * l_kl
    if name == "kl":
        return l_fgt + config.beta * _kl(model, reference, batches[PAIRS])
    if name == "llmu":
        w = config.llmu
        l_rdn = nll_loss(logits(model, batches[MISMATCH]), *_args(batches[MISMATCH]))
        l_kl = _kl(model, reference, batches[PAIRS])
        return w.forget_weight * l_fgt + w.mismatch_weight * l_rdn + w.kl_weight * l_kl
    raise KeyError(name)
