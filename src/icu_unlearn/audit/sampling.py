"""The sampling attack (the lm-extraction benchmark's baseline) and the beam attack.

The 2022 Training Data Extraction Challenge (github.com/google-research/
lm-extraction-benchmark) baseline draws 100 top-k samples of the 50-token
suffix for each prefix and guesses the one the model finds most likely (lowest
loss). We draw N samples from the attack's scheme with a seeded torch.Generator,
rank them by the model's own, unwarped, mean NLL, and report whether the
best-ranked is the suffix (the benchmark's success), whether any sample is, and
the longest run of tokens any sample shares verbatim with the suffix.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from ..audit_settings import SamplingScheme
from ..generation import model_device
from .extraction import scheme_logprobs


@torch.inference_mode()
def sample_suffixes(
    model: PreTrainedModel,
    prefix: Sequence[int],
    length: int,
    num_samples: int,
    scheme: SamplingScheme,
    generator: torch.Generator,
    batch_rows: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_samples` continuations of `prefix`, (N, length) token ids, and each one's
    mean NLL under the model's own distribution (N,).

    The prefix is encoded once; each chunk of `batch_rows` samples decodes from a
    copy of its cache, repeated per row. The uniforms are drawn up front, one per
    sample and step, so that the samples do not depend on the chunking.
    """
    device = model_device(model)
    uniforms = torch.rand(
        num_samples, length, generator=generator, dtype=torch.float64, device=device
    )
    ids = torch.tensor([list(prefix)], device=device)
    prefill = model(input_ids=ids, use_cache=True, logits_to_keep=1)  # (1, 1, V) logits
    tokens, nlls = [], []
    for start in range(0, num_samples, batch_rows):
        rows = min(batch_rows, num_samples - start)
        cache = copy.deepcopy(prefill.cache)
        cache.batch_repeat_interleave(rows)
        logits = prefill.logits[:, -1].float().expand(rows, -1)  # (R, V)
        drawn, nll = [], torch.zeros(rows, dtype=torch.float64, device=device)
        for step in range(length):
            u = uniforms[start : start + rows, step : step + 1]
            tok = _draw(scheme_logprobs(logits, scheme).exp(), u)  # (R, 1)
            nll -= logits.log_softmax(-1).gather(-1, tok).squeeze(-1).double()
            drawn.append(tok)
            if step + 1 < length:
                out = model(input_ids=tok, cache=cache, use_cache=True)
                cache, logits = out.cache, out.logits[:, -1].float()
        tokens.append(torch.cat(drawn, dim=1))
        nlls.append(nll / length)
    return torch.cat(tokens).cpu(), torch.cat(nlls).cpu()


def _draw(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row of `probs` (R, V) -> (R, 1), by inverting the cumulative
    distribution at `uniform` (R, 1) in [0, 1).

    torch.multinomial does the same and took 10x longer on a CPU (40 ms against 4 ms
    for 20 rows over GPT-2's 50k tokens). `right=True` never lands on a token of
    probability 0: its cumulative sum equals its predecessor's.
    """
    cdf = probs.double().cumsum(-1)
    picked = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)
    return picked.clamp(max=probs.shape[-1] - 1)


def longest_common_runs(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(N,) length of the longest contiguous token run each sample (N, L) shares with
    `truth` (M,), anywhere in either: the longest common substring, by the usual DP
    run[i][j] = run[i-1][j-1] + 1 where sample_i = truth_j, over all samples at once."""
    equal = samples[:, :, None] == truth[None, None, :]  # (N, L, M)
    run = torch.zeros(samples.shape[0], truth.shape[0] + 1, dtype=torch.long)
    best = torch.zeros(samples.shape[0], dtype=torch.long)
    for i in range(samples.shape[1]):
        run = torch.cat([run.new_zeros(run.shape[0], 1), (run[:, :-1] + 1) * equal[:, i]], dim=1)
        best = torch.maximum(best, run.max(-1).values)
    return best


def sampling_attack(
    model: PreTrainedModel,
    prefix: Sequence[int],
    suffix: Sequence[int],
    num_samples: int,
    scheme: SamplingScheme,
    seed: int,
    batch_rows: int = 128,
) -> dict:
    """The attack on one sequence: best-ranked exact, any exact, longest verbatim run."""
    generator = torch.Generator(device=model_device(model)).manual_seed(seed)
    samples, nll = sample_suffixes(
        model, prefix, len(suffix), num_samples, scheme, generator, batch_rows
    )
    truth = torch.tensor(list(suffix))
    exact = (samples == truth).all(-1)
    runs = longest_common_runs(samples, truth)
    best = int(torch.argsort(nll, stable=True)[0])  # lowest loss; the first drawn on a tie
    return {
        "best_exact": bool(exact[best]),
        "any_exact": bool(exact.any()),
        "exact_samples": int(exact.sum()),
        "longest_run": int(runs.max()),
        "best_run": int(runs[best]),
        "best_sample_ids": samples[best].tolist(),
    }
