"""What a run measures once to decide with: the forgetting thresholds (fixed or
calibrated), the reference model's per-sequence scores, the probes that watch what must
not break, and the perplexity bound. The decisions themselves are the stopping rule's
(`rules/`)."""

from __future__ import annotations

import math
import statistics

import torch

from .config import RunConfig
from .data.forget import load_forget_set
from .errors import UsageError
from .evaluate import EvalSettings, score_samples
from .metrics.perplexity import log_likelihood, perplexity_from
from .models import load_model_and_tokenizer
from .scoring import teacher_forced

PROBE_KEYS = ("retain_el", "retain_ma", "heldout_ppl")


def mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def mean_el_ma(model, tokenizer, samples, settings: EvalSettings, procs) -> tuple[float, float]:
    """Mean EL_n and MA of `samples`: the retain probe and the auto thresholds."""
    rows = score_samples(model, tokenizer, samples, settings, procs=procs, similarity=False)
    return mean(rows, f"el_{settings.el_n}"), mean(rows, "ma")


def thresholds(config: RunConfig, model, tokenizer, forget, settings, procs) -> dict:
    """EL/MA bounds under which the forget set counts as forgotten: the paper's fixed
    values, or (`stop.thresholds: auto`) the model's own means on held-out sequences."""
    stop = config.stop
    if stop.thresholds == "fixed":
        return {"el_max": stop.el_max, "ma_max": stop.ma_max, "source": "fixed"}
    heldout = load_forget_set(stop.heldout, tokenizer, config.prefix_length, config.data_dir)
    refuse_overlap(heldout, forget, "stop.heldout shares samples with the forget set")
    el, ma = mean_el_ma(model, tokenizer, heldout, settings, procs)
    return {"el_max": el, "ma_max": ma, "source": f"auto: {stop.heldout}"}


def refuse_overlap(samples, forget, message: str) -> None:
    """Refuse `samples` (held-out, probe or audit sequences) that are in the forget set."""
    overlap = {s.content_hash() for s in samples} & {s.content_hash() for s in forget}
    if overlap:
        raise UsageError(f"{message} ({len(overlap)}); choose other sequences")


def load_probes(config: RunConfig, tokenizer, forget, vocab_size) -> dict[str, list]:
    """The retain and held-out probe sequences, none of them in the forget set."""
    probes = {}
    for name in ("retain", "heldout"):
        spec = getattr(config.probe, name)
        if spec:
            samples = load_forget_set(
                spec, tokenizer, config.prefix_length, config.data_dir, vocab_size
            )
            refuse_overlap(samples, forget, f"probe.{name} shares samples with the forget set")
            probes[name] = samples
    return probes


def measure_probes(
    model, tokenizer, probes: dict, settings: EvalSettings, procs, drafts: dict | None = None
) -> dict:
    """What the run must not break: MA/EL of retained sequences, held-out perplexity.

    `drafts`: the kept records' continuations from the last scoring, verified instead of
    decoded and updated (`evaluate.score_samples`; a kept record's barely move, so a
    verification pass replaces most of its EL's decoding); the scores are the same."""
    result = {}
    if "retain" in probes:
        rows = score_samples(
            model, tokenizer, probes["retain"], settings, procs=procs, similarity=False,
            drafts=drafts,
        )  # fmt: skip
        el = f"el_{settings.el_n}"
        result["retain_el"], result["retain_ma"] = mean(rows, el), mean(rows, "ma")
        # each kept record's own: a mean can hide one record lost among many kept
        result["retain"] = {r["id"]: {"el": r[el], "ma": r["ma"]} for r in rows}
    if "heldout" in probes:
        sequences = procs.score_share([s.input_ids for s in probes["heldout"]])
        total, count = log_likelihood(model, sequences, tokenizer.pad_token_id, settings.batch_size)
        if not procs.lockstep:
            total, count = procs.sum([total, count])
        result["heldout_ppl"] = perplexity_from(total, int(count))
    return result


def perplexity_exploded(config: RunConfig, before: dict, now: dict, epoch: int) -> str | None:
    """Why the run must stop as diverged, when held-out perplexity left its bound."""
    ratio = config.probe.max_perplexity_ratio
    if ratio is None:
        return None
    was, is_ = before["heldout_ppl"], now["heldout_ppl"]
    if math.isfinite(is_) and is_ <= ratio * was:
        return None
    return f"held-out perplexity {is_:.2f} exceeded {ratio} x {was:.2f} at epoch {epoch}"


def retain_damaged(config: RunConfig, before: dict, now: dict) -> dict[str, dict]:
    """The retained records (id: EL and MA now) whose MA fell more than
    probe.retain_max_ma_drop below their own MA before the run; empty when none did, or
    nothing is watched. MA is a share of suffix tokens: the drop is compared rounded, so
    that one token of ten (0.8 - 0.7 = 0.10000000000000009 in floats) is a drop of 0.1."""
    drop = config.probe.retain_max_ma_drop
    if drop is None or "retain" not in now or "retain" not in before:
        return {}  # (a run resumed from before per-record probes has no levels to keep)
    was = before["retain"]
    return {i: r for i, r in now["retain"].items() if round(was[i]["ma"] - r["ma"], 9) > drop}


def load_reference(config: RunConfig, tokenizer):
    """stop.reference's model, refused (before anything is written) when its tokenizer is
    not the model's: its distributions and scores are over the same tokens."""
    model, ref_tokenizer = load_model_and_tokenizer(config.stop.reference, config.trust_remote_code)
    if ref_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise UsageError(
            f"stop.reference {config.stop.reference!r} has another tokenizer than the model; "
            "give the model the run's model was trained from"
        )
    return model


def reference_rows(config: RunConfig, reference, tokenizer, forget, settings, procs) -> dict:
    """The reference model's EL, MA, suffix NLL and greedy continuation per sequence,
    measured once; with
    stop.token_floor, also its log-probability of every token x_1 .. x_{T-1}."""
    rows = score_samples(reference, tokenizer, forget, settings, procs=procs, suffix_nll=True)
    # its greedy continuation too (the set-up moves it into the epoch-0 rows, beside the
    # texts: the manifest and checkpoints hold no text)
    keys = (f"el_{settings.el_n}", "ma", "suffix_nll", "generation")
    scores = {r["id"]: {k: r[k] for k in keys} for r in rows}
    if config.stop.token_floor is not None:
        ids = [s.input_ids for s in forget]
        # 16 a batch, longest first: the batching every recorded floor was measured with
        scored = teacher_forced(
            reference, ids, tokenizer.pad_token_id, batch_size=16, token_logprobs=True
        )
        for sample, values in zip(forget, scored.token_logprobs, strict=True):
            scores[sample.id]["token_logprobs"] = [round(v, 6) for v in values.tolist()]
    return scores


@torch.no_grad()
def reference_targets(reference, forget) -> dict[str, torch.Tensor]:
    """forget_target: reference: per forget sequence, the reference model's next-token
    log-probabilities at every position that predicts a token, (T - 1, V), bfloat16.

    Computed once at set-up, where the reference model is loaded anyway, and the model
    freed after: the forget set is small (32 sequences of 100 tokens over SmolLM2's
    49,152 tokens: 311 MB in bfloat16), where a third model held for the whole run would
    be its weights (540 MB in float32) and a forward pass every step. bfloat16 keeps
    three significant digits of a log-probability: what it loses is on tokens whose
    probability is too small to weigh in the KL.
    """
    targets = {}
    for sample in forget:
        logits = reference(input_ids=torch.tensor([sample.input_ids])).logits[0, :-1]
        targets[sample.id] = torch.log_softmax(logits.float(), dim=-1).to(torch.bfloat16)
    return targets


def holdout_level(config: RunConfig, model, tokenizer, forget, settings, procs) -> float:
    """forget_target: calibrated: the median suffix NLL (nats a token) of audit.holdout's
    never-seen sequences under the model: the level a forgotten suffix is pulled to, and
    the audit's `stands_out` baseline."""
    holdout = load_forget_set(
        config.audit.holdout, tokenizer, config.prefix_length, config.data_dir
    )
    refuse_overlap(holdout, forget, "audit.holdout shares samples with the forget set")
    rows = score_samples(
        model, tokenizer, holdout, settings, procs=procs, similarity=False, el=False,
        suffix_nll=True,
    )  # fmt: skip
    return statistics.median(r["suffix_nll"] for r in rows)
