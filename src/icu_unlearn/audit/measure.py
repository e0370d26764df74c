"""The measurements of one model on the forget and holdout sequences."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..audit_settings import AuditSettings
from ..data.forget import ForgetSample
from ..generation import generate_continuations
from ..metrics.memorization import memorization_scores
from ..privacy import redact_text
from . import membership
from .extraction import extraction_chance, extraction_strength, log10_or_none
from .sampling import longest_common_runs, sampling_attack
from .scoring import SuffixScores, suffix_scores


@dataclass
class Context:
    """What every measurement needs besides the model and the sequences."""

    tokenizer: PreTrainedTokenizerBase
    settings: AuditSettings
    progress: bool = False
    num_samples: int = 0  # the sampling attack's samples a sequence (`sample:N`); 0: not run
    num_beams: int = 0  # the beam attack's width (`beam:WIDTH`); 0: not run
    redact: bool = False  # generated texts as hashes from the start, in the cache as well

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def text(self, ids) -> str:
        """A generated text; every one repeats what was memorized, so under redact its hash."""
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return redact_text(text) if self.redact else text


def _scores(model, samples: list[ForgetSample], ctx: Context) -> list[SuffixScores]:
    return suffix_scores(
        model,
        [s.input_ids for s in samples],
        [s.prefix_length for s in samples],
        ctx.pad_token_id,
        ctx.settings.schemes,
        ctx.settings.batch_size,
    )


def _membership(scores: SuffixScores, sample: ForgetSample, k: float) -> dict:
    return membership.suffix_membership(scores.logprobs, scores.mu, scores.sigma, sample.suffix, k)


def measure_holdout(
    model: PreTrainedModel, samples: list[ForgetSample], ctx: Context
) -> list[dict]:
    """Membership scores, MA (Eq. 9) and suffix MA of each holdout sequence."""
    rows = []
    for scores, sample in zip(_scores(model, samples, ctx), samples, strict=True):
        rows.append(
            _membership(scores, sample, ctx.settings.mia_k)
            | {"ma": scores.ma, "suffix_ma": sum(scores.hits) / len(scores.hits)}
        )
    return rows


def _probabilistic(scores: SuffixScores, settings: AuditSettings) -> list[dict]:
    counts = sorted({*settings.attacker_samples, settings.leak_samples})
    return [
        {
            "scheme": scheme.label(),
            "log10_p": log10_or_none(log_p),
            "chance": {str(n): extraction_chance(log_p, n) for n in counts},
        }
        for scheme, log_p in zip(settings.schemes, scores.scheme_logp, strict=True)
    ]


def _sampling(model, samples: list[ForgetSample], ctx: Context) -> list[dict | None]:
    settings = ctx.settings
    if ctx.num_samples == 0:
        return [None] * len(samples)
    rows = []
    for sample in tqdm(samples, desc="sampling attack", disable=not ctx.progress, unit="seq"):
        # Seeded by the sequence's content, so that it draws the same samples in any subset.
        seed = settings.seed + int(sample.content_hash()[:12], 16)
        row = sampling_attack(
            model,
            sample.prefix_ids,
            sample.suffix_ids,
            ctx.num_samples,
            settings.sampler,
            seed,
            settings.decode_batch_size,
        )
        row["best_sample"] = ctx.text(row.pop("best_sample_ids"))
        rows.append(row)
    return rows


def _beam(model, samples: list[ForgetSample], ctx: Context) -> list[dict | None]:
    if ctx.num_beams == 0:
        return [None] * len(samples)
    outputs = generate_continuations(
        model,
        [s.prefix_ids for s in samples],
        [len(s.suffix_ids) for s in samples],
        ctx.pad_token_id,
        num_beams=ctx.num_beams,
        batch_size=ctx.settings.batch_size,
    )
    rows = []
    for out, sample in zip(outputs, samples, strict=True):
        run = longest_common_runs(torch.tensor([out]), torch.tensor(sample.suffix_ids))
        rows.append(
            {
                "exact": tuple(out) == sample.suffix_ids,
                "run": int(run[0]),
                "beam_generation": ctx.text(out),
            }
        )
    return rows


def measure_forget(model: PreTrainedModel, samples: list[ForgetSample], ctx: Context) -> list[dict]:
    """Greedy, probabilistic, sampling, beam and membership measurements per sequence."""
    settings = ctx.settings
    scores = _scores(model, samples, ctx)
    # EL's decoding starts from the same pass's greedy tokens (one pass, not two)
    argmax = torch.zeros((len(samples), max(len(s.input_ids) for s in samples)), dtype=torch.long)
    for i, s in enumerate(scores):
        argmax[i, : len(s.greedy)] = s.greedy
    greedy = memorization_scores(
        model,
        [s.input_ids for s in samples],
        [s.prefix_length for s in samples],
        ctx.pad_token_id,
        n=settings.el_n,
        window=settings.el_window,
        batch_size=settings.batch_size,
        decode_batch_size=settings.decode_batch_size,
        greedy=argmax,
    )
    sampling, beam = _sampling(model, samples, ctx), _beam(model, samples, ctx)
    rows = []
    for i, sample in enumerate(samples):
        generation = greedy.generations[i]
        rows.append(
            {
                "greedy": {
                    "exact": tuple(generation) == sample.suffix_ids,
                    f"el_{settings.el_n}": greedy.extraction_likelihood[i],
                    "ma": greedy.memorization_accuracy[i],
                    "suffix_ma": sum(scores[i].hits) / len(scores[i].hits),
                    "extraction_strength": extraction_strength(scores[i].hits),
                    "generation": ctx.text(generation),
                },
                "probabilistic": _probabilistic(scores[i], settings),
                "sampling": sampling[i],
                "beam": beam[i],
                "membership": _membership(scores[i], sample, settings.mia_k),
            }
        )
    return rows
