"""Pure loss functions over suffix tokens (t >= t0), padding masked.

Shapes: input_ids and attention_mask (B, T), right-padded; prefix_lengths (B,) holds
each sample's t0. Logits (B, K, V) are those of the last K positions, T-K .. T-1
(position t predicts x_{t+1}): K = T is the whole sequence, and `positions_needed`
is the smallest K a batch's losses need, which a causal LM computes alone when given
it as `logits_to_keep`. Every loss is a per-sample mean over that sample's suffix
tokens, then a mean over samples: a sample's weight does not depend on its length or
on which other samples share its batch, so batch 8 x accumulation 1 equals 4 x 2.

Memory: the full-vocabulary log-softmax runs in float32 on a few positions at a time,
and its backward recomputes it the same way, so nothing of size (B, K, V) is held for
backward but the logits themselves (the model's, and for L_kl the reference's); a
one-shot log-softmax would hold several float32 (B, K, V) tensors per batch (the
log-softmax, the reference probabilities, their difference). tests/loss_reference.py
keeps that one-shot form over full logits as the reference these are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Elements of one chunk's float32 (B, positions, V) work tensors: 16 MB each, small next
# to any model, large enough that the per-chunk loop costs nothing measurable.
_CHUNK_ELEMENTS = 2**22


def positions_needed(prefix_lengths: torch.Tensor, length: int) -> int:
    """K = T - min(t0) + 1: positions min(t0) - 1 .. T-2 predict every suffix token.

    The last position T-1 predicts nothing and is kept all the same: with it the slice
    is "the last K positions", the plain int form of `logits_to_keep`.
    """
    return length - max(int(prefix_lengths.min()), 1) + 1


def suffix_mask(attention_mask: torch.Tensor, prefix_lengths: torch.Tensor) -> torch.Tensor:
    """(B, T-1) float mask of the predicted tokens x_t with t >= t0 that are not padding."""
    positions = torch.arange(1, attention_mask.shape[1], device=attention_mask.device)  # t
    is_suffix = positions[None, :] >= prefix_lengths[:, None]
    return (is_suffix & attention_mask[:, 1:].bool()).float()


def prefix_mask(attention_mask: torch.Tensor, prefix_lengths: torch.Tensor) -> torch.Tensor:
    """(B, T-1) float mask of the predicted prefix tokens x_t with 1 <= t < t0, not padding."""
    return (1.0 - suffix_mask(attention_mask, prefix_lengths)) * attention_mask[:, 1:].float()


def _kept_mask(logits, attention_mask, prefix_lengths) -> torch.Tensor:
    """(B, K-1) suffix mask of the tokens the K kept positions predict, t = T-K+1 .. T-1."""
    length, kept = attention_mask.shape[1], logits.shape[1]
    if kept < positions_needed(prefix_lengths, length):
        raise ValueError(
            f"logits cover the last {kept} of {length} positions, but the suffixes start at "
            f"t0 = {int(prefix_lengths.min())}: keep {positions_needed(prefix_lengths, length)}"
        )
    return suffix_mask(attention_mask, prefix_lengths)[:, length - kept :]


def _chunks(logits: torch.Tensor):
    """Position slices of logits[:, :-1] (the positions that predict a token), each
    about _CHUNK_ELEMENTS elements."""
    batch, kept, vocab = logits.shape
    step = max(1, _CHUNK_ELEMENTS // (batch * vocab))
    return [slice(a, min(a + step, kept - 1)) for a in range(0, kept - 1, step)]


def _wide_dtype(logits: torch.Tensor) -> torch.dtype:
    """At least float32: bfloat16 and float16 lose too much in a log-softmax (float64
    stays float64, which gradcheck needs)."""
    return torch.promote_types(logits.dtype, torch.float32)


def _wide(logits: torch.Tensor) -> torch.Tensor:
    return logits.to(_wide_dtype(logits))


class _TokenLogprobs(torch.autograd.Function):
    """log P(target) = z_target - logsumexp(z) per position, chunk by chunk.

    Gradient w.r.t. the logits z: g (onehot(target) - softmax(z)), recomputed per chunk
    in backward and written into one (B, K, V) buffer (the one the LM head's backward
    needs anyway)."""

    @staticmethod
    def forward(ctx, logits, targets):  # (B, K, V), (B, K-1) -> (B, K-1)
        out = logits.new_empty(targets.shape, dtype=_wide_dtype(logits))
        for s in _chunks(logits):
            logp = F.log_softmax(_wide(logits[:, s]), dim=-1)
            out[:, s] = logp.gather(-1, targets[:, s, None]).squeeze(-1)
        ctx.save_for_backward(logits, targets)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, targets = ctx.saved_tensors
        grad = torch.zeros_like(logits)  # the last position predicts nothing: stays 0
        for s in _chunks(logits):
            g = grad_out[:, s, None]  # (B, c, 1)
            chunk = F.softmax(_wide(logits[:, s]), dim=-1).mul_(-g)
            chunk.scatter_add_(-1, targets[:, s, None], g)
            grad[:, s] = chunk
        return grad, None


class _TokenKL(torch.autograd.Function):
    """KL(P_ref || P) = sum_v p_ref (log p_ref - log p) per position, chunk by chunk.

    Gradient w.r.t. the model's logits: g (softmax(z) - p_ref), since sum_v p_ref = 1.
    The reference side is the frozen original model and gets no gradient."""

    @staticmethod
    def forward(ctx, logits, reference_logits):  # (B, K, V) twice -> (B, K-1)
        if ctx.needs_input_grad[1]:
            raise ValueError("kl_loss: the reference logits must not require grad (frozen)")
        batch, kept, _ = logits.shape
        out = logits.new_empty(batch, kept - 1, dtype=_wide_dtype(logits))
        for s in _chunks(logits):
            logp = F.log_softmax(_wide(logits[:, s]), dim=-1)
            ref_logp = F.log_softmax(_wide(reference_logits[:, s]), dim=-1)
            out[:, s] = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
        ctx.save_for_backward(logits, reference_logits)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, reference_logits = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        for s in _chunks(logits):
            p = F.softmax(_wide(logits[:, s]), dim=-1)
            p.sub_(F.softmax(_wide(reference_logits[:, s]), dim=-1))
            grad[:, s] = p.mul_(grad_out[:, s, None])
        return grad, None


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, K-1) log P(x_t | x_<t) for t = T-K+1 .. T-1 (all t >= 1 when K = T)."""
    kept = logits.shape[1]
    return _TokenLogprobs.apply(logits, input_ids[:, input_ids.shape[1] - kept + 1 :])


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sample's masked positions, then over samples."""
    per_sample = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_sample.mean()


def suffix_logprob_sum(logits, input_ids, attention_mask, prefix_lengths) -> torch.Tensor:
    """log P(suffix | prefix) = sum of the suffix tokens' log-probabilities, per sample: (B,).

    DPO and NPO compare whole-sequence likelihoods with the reference model, so they
    sum over tokens; the ascent and NLL terms average instead.
    """
    mask = _kept_mask(logits, attention_mask, prefix_lengths)
    return (token_logprobs(logits, input_ids) * mask).sum(-1)


def forget_loss(logits, input_ids, attention_mask, prefix_lengths, floor=None) -> torch.Tensor:
    """L_fgt (Eq. 1): + mean log P(x_t | x_<t) over suffix tokens. Minimising it is
    gradient ascent on the negative log-likelihood of the forget samples.

    `floor` (B, T-1), aligned with the predicted tokens x_1 .. x_{T-1} (`suffix_mask`),
    -inf where a token has none: a floored token adds |log P - floor| instead, so it is
    pushed down exactly as by ascent while above its floor and pulled back up once
    below it. Masking it out below the floor is not enough: the ascent on its
    neighbours drags it further down through the shared weights.
    """
    mask = _kept_mask(logits, attention_mask, prefix_lengths)
    logp = token_logprobs(logits, input_ids)
    if floor is not None:
        floor = floor[:, floor.shape[1] - logp.shape[1] :]
        logp = torch.where(torch.isfinite(floor), (logp - floor).abs(), logp)
    return _masked_mean(logp, mask)


def nll_loss(logits, input_ids, attention_mask, prefix_lengths) -> torch.Tensor:
    """L_lrn (Eq. 3): mean negative log-likelihood of the suffix tokens."""
    return -forget_loss(logits, input_ids, attention_mask, prefix_lengths)


def kl_loss(logits, reference_logits, attention_mask, prefix_lengths) -> torch.Tensor:
    """L_kl (Eq. 4): KL(P_theta0 || P_theta) per suffix token, padding masked.

    The reference logits come from the frozen original model on the same batch and
    the same kept positions, computed on the fly (no stored softmaxes).
    """
    if reference_logits.shape != logits.shape:
        raise ValueError(
            f"kl_loss: reference logits {tuple(reference_logits.shape)} and model logits "
            f"{tuple(logits.shape)} must cover the same positions"
        )
    mask = _kept_mask(logits, attention_mask, prefix_lengths)
    return _masked_mean(_TokenKL.apply(logits, reference_logits), mask)


def icu_loss(l_fgt: torch.Tensor, l_lrn: torch.Tensor, l_kl: torch.Tensor, alpha, beta):
    """Eq. 6: L = L_fgt + alpha L_lrn + beta L_kl."""
    return l_fgt + alpha * l_lrn + beta * l_kl


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al., 2024): (2 / beta) log(1 + (pi_theta / pi_ref)^beta) on the
    forget suffixes, mean over samples. `logp`, `ref_logp`: (B,) sequence log-likelihoods."""
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()


def dpo_loss(
    chosen_logp, chosen_ref_logp, rejected_logp, rejected_ref_logp, beta: float
) -> torch.Tensor:
    """DPO (Rafailov et al., 2023): -log sigmoid(beta (chosen log-ratio - rejected log-ratio)),
    mean over samples. Here chosen = a refusal, rejected = the true suffix."""
    margin = (chosen_logp - chosen_ref_logp) - (rejected_logp - rejected_ref_logp)
    return F.softplus(-beta * margin).mean()


def reference_kl_loss(logits, reference_logprobs, attention_mask, prefix_lengths) -> torch.Tensor:
    """The reference-matched forget term: KL(P_ref || P_theta) per suffix token, padding
    masked, where P_ref is a model that never trained on the forget set.

    `reference_logprobs` (B, K, V) holds the reference model's next-token log-probabilities
    at the same K positions as `logits`, computed once for the (small) forget set;
    positions outside the suffix are masked whatever they hold. Minimising it pulls each
    forget-suffix distribution to the never-trained model's, where ascent (Eq. 1) has no
    floor. Not the paper's loss.
    """
    return kl_loss(logits, reference_logprobs, attention_mask, prefix_lengths)


def calibrated_loss(logits, input_ids, attention_mask, prefix_lengths, level) -> torch.Tensor:
    """The level term of the forget targets: per sample the Huber distance (1 nat) between
    its suffix NLL and `level`, then the mean over samples.

    `level` (B,) is a per-token NLL of never-seen text: the reference model's on the same
    suffix, or (forget_target: calibrated) the holdout's median under the model. Far
    below the level's NLL this is gradient ascent on the suffix NLL at a constant rate;
    above it, descent: a forgotten suffix ends as likely as never-seen text, not far less.
    Within a nat the pull shrinks with the distance, so it settles instead of oscillating
    by a step around the level. Not the paper's loss.
    """
    mask = _kept_mask(logits, attention_mask, prefix_lengths)
    return _level_loss(token_logprobs(logits, input_ids), mask, level)


def prefix_level_loss(logits, input_ids, attention_mask, prefix_lengths, level) -> torch.Tensor:
    """The level term on the prefix: per sample the Huber distance (1 nat) between the
    prefix NLL (tokens x_1 .. x_{t0-1}, nats a token) and `level` (B,), the reference
    model's on the same prefix; then the mean over samples. `logits`: every position's.

    A planted record was learnt whole, its prefix too, and KL(P_ref || P_theta) barely
    weighs a true token the model still makes too likely: with the suffix alone held at
    the reference's level, prefixes of the 32-sequence protocol ended 0.7-1.8 nats a
    token likelier than under the reference after 10 epochs, their greedy next tokens
    the planted ones (MA above the reference's while the suffix matched it). Not the
    paper's loss.
    """
    if logits.shape[1] != input_ids.shape[1]:
        raise ValueError("prefix_level_loss needs the logits of every position")
    mask = prefix_mask(attention_mask, prefix_lengths)
    return _level_loss(token_logprobs(logits, input_ids), mask, level)


def _level_loss(logp: torch.Tensor, mask: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    nll = -(logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return F.smooth_l1_loss(nll, level.to(nll.dtype), beta=1.0)
