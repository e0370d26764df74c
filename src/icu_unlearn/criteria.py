"""When a run is done: the forgetting thresholds (fixed or calibrated), the probes that
watch what must not break, the perplexity bound, and the stopping decision."""

from __future__ import annotations

import math

from .config import RunConfig
from .data.forget import load_forget_set
from .errors import UsageError
from .evaluate import EvalSettings, score_samples
from .metrics.perplexity import log_likelihood, perplexity_from

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
    _refuse_overlap(heldout, forget, "stop.heldout shares samples with the forget set")
    el, ma = mean_el_ma(model, tokenizer, heldout, settings, procs)
    return {"el_max": el, "ma_max": ma, "source": f"auto: {stop.heldout}"}


def _refuse_overlap(samples, forget, message: str) -> None:
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
            _refuse_overlap(samples, forget, f"probe.{name} shares samples with the forget set")
            probes[name] = samples
    return probes


def measure_probes(model, tokenizer, probes: dict, settings: EvalSettings, procs) -> dict:
    """What the run must not break: MA/EL of retained sequences, held-out perplexity."""
    result = {}
    if "retain" in probes:
        el, ma = mean_el_ma(model, tokenizer, probes["retain"], settings, procs)
        result["retain_el"], result["retain_ma"] = el, ma
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


def refuse_already_forgotten(rows: list[dict], limits: dict, el_n: int) -> None:
    """A forget set the model has already forgotten is refused before anything is written."""
    el, ma = mean(rows, f"el_{el_n}"), mean(rows, "ma")
    if el < limits["el_max"] and ma < limits["ma_max"]:
        raise UsageError(
            f"the model has already forgotten this forget set (EL_{el_n} {el:.4f} < "
            f"{limits['el_max']:.4f}, MA {ma:.4f} < {limits['ma_max']:.4f}); "
            "nothing to unlearn: check the model and forget set, or lower stop.el_max/ma_max"
        )


def stop_reason(
    config: RunConfig, rows: list[dict], limits: dict, active: list[str], epoch: int
) -> str | None:
    """After an epoch: why the run ends now, or None to go on.

    Forgetting (the paper's rule): the forget set's mean EL_n and MA under the
    thresholds, or no sample left active. Memorizing: every sequence's MA at the target.
    """
    if config.method == "memorize":
        if min(r["ma"] for r in rows) >= config.memorize.target_ma:
            return "criteria_met"
    elif (
        mean(rows, f"el_{config.stop.el_n}") < limits["el_max"]
        and mean(rows, "ma") < limits["ma_max"]
    ):
        return "criteria_met"
    if not active:
        return "all_forgotten"
    if epoch >= config.max_epochs:
        return "max_epochs"
    return None
