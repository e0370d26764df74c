"""When a run is done: the forgetting thresholds (fixed or calibrated), the probes that
watch what must not break, the perplexity bound, and the stopping decision."""

from __future__ import annotations

import math

from .config import RunConfig
from .data.forget import load_forget_set
from .errors import UsageError
from .evaluate import EvalSettings, score_samples
from .generation import token_logprobs
from .metrics.perplexity import log_likelihood, perplexity_from
from .models import load_model_and_tokenizer

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


def refuse_already_forgotten(config: RunConfig, rows: list[dict], limits: dict) -> None:
    """A forget set the model has already forgotten is refused before anything is written."""
    el_n = config.stop.el_n
    if config.stop.scope == "each" and all(r["done"] for r in rows):
        raise UsageError(
            f"the model has already forgotten every sequence of this forget set on its own (EL_{el_n} < "
            f"{limits['el_max']:.4f} and MA < {limits['ma_max']:.4f}, or no more than under "
            "stop.reference); nothing to unlearn: check the model and forget set"
        )
    el, ma = mean(rows, f"el_{el_n}"), mean(rows, "ma")
    if config.stop.scope == "mean" and el < limits["el_max"] and ma < limits["ma_max"]:
        raise UsageError(
            f"the model has already forgotten this forget set (EL_{el_n} {el:.4f} < "
            f"{limits['el_max']:.4f}, MA {ma:.4f} < {limits['ma_max']:.4f}); "
            "nothing to unlearn: check the model and forget set, or lower stop.el_max/ma_max"
        )


def reference_rows(config: RunConfig, tokenizer, forget, settings, procs) -> dict | None:
    """The never-trained reference's EL, MA and suffix NLL per sequence, measured once;
    with stop.token_floor, also its log-probability of every token x_1 .. x_{T-1}."""
    if config.stop.reference is None:
        return None
    model, ref_tokenizer = load_model_and_tokenizer(config.stop.reference, config.trust_remote_code)
    if ref_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise UsageError(
            f"stop.reference {config.stop.reference!r} has another tokenizer than the model; "
            "give the model the run's model was trained from"
        )
    rows = score_samples(
        model, tokenizer, forget, settings, procs=procs, similarity=False, suffix_nll=True
    )
    keys = (f"el_{settings.el_n}", "ma", "suffix_nll")
    scores = {r["id"]: {k: r[k] for k in keys} for r in rows}
    if config.stop.token_floor is not None:
        logprobs = token_logprobs(model, [s.input_ids for s in forget], tokenizer.pad_token_id)
        for sample, values in zip(forget, logprobs, strict=True):
            scores[sample.id]["token_logprobs"] = [round(v, 6) for v in values.tolist()]
    return scores


def mark_done(config: RunConfig, rows: list[dict], limits: dict, reference: dict | None) -> None:
    """Each row gains `done`: "criteria" (its own EL and MA under the thresholds),
    "reference" (no more extractable than under the reference model) or None, and
    `at_reference_nll`: its suffix is already as unlikely as under the reference."""
    stop, key = config.stop, f"el_{config.stop.el_n}"
    for r in rows:
        ref = reference[r["id"]] if reference else None
        # EL is None where it could not decide (see el_needed): then neither rule holds
        measured = r[key] is not None
        own = measured and r[key] < limits["el_max"] and r["ma"] < limits["ma_max"]
        as_ref = (
            measured
            and ref is not None
            and (
                r[key] <= ref[key] + stop.reference_margin
                and r["ma"] <= ref["ma"] + stop.reference_margin
            )
        )
        r["done"] = "criteria" if own else "reference" if as_ref else None
        r["at_reference_nll"] = ref is not None and (
            r["suffix_nll"] >= ref["suffix_nll"] - stop.reference_nll_margin
        )


def el_needed(config: RunConfig, limits: dict, reference: dict | None, everything: bool):
    """Which sequences' EL can change a decision this epoch, given every row's MA.

    EL is the dearest score (a greedy decode per mismatch position) and matters only
    next to an MA that passes: under `each`, a sequence's own rule needs MA < ma_max
    and the reference rule MA <= the reference's + margin; under `mean`, the mean MA
    under ma_max. `everything` (epoch 0, the last epoch, `log.el_every_epoch`) scores all.
    """
    stop = config.stop

    def needed(rows: list[dict]) -> set[str]:
        if everything or config.log.el_every_epoch:
            return {r["id"] for r in rows}
        if stop.scope == "mean":
            return {r["id"] for r in rows} if mean(rows, "ma") < limits["ma_max"] else set()
        return {
            r["id"]
            for r in rows
            if r["ma"] < limits["ma_max"]
            or (
                reference is not None
                and r["ma"] <= reference[r["id"]]["ma"] + stop.reference_margin
            )
        }

    return needed


def to_check(config: RunConfig, rows: list[dict], active: list[str]) -> list[str]:
    """The samples IUR checks this epoch: the active ones (the paper); every one with
    `refinement.readmit` (the authors' code); under `scope: each`, every one not done."""
    if config.stop.scope == "each":
        return [r["id"] for r in rows if r["done"] is None]
    return [r["id"] for r in rows] if config.refinement.readmit else list(active)


def next_active(config: RunConfig, rows: list[dict], forgotten: set, active: list[str]):
    """The samples that train in the next epoch.

    `mean` (the paper): the active ones IUR did not call forgotten (with readmit: every
    one it did not). `each`: every sequence not done, less those IUR calls forgotten and
    those already at the reference's likelihood; when that leaves nothing while some
    sequence is not done, every sequence not done trains (IUR's similarity is a pause,
    never the reason a record stays extractable).
    """
    if config.method == "memorize":
        return list(active)
    if config.stop.scope == "mean":
        pool = [r["id"] for r in rows] if config.refinement.readmit else active
        return [i for i in pool if i not in forgotten]
    undone = [r["id"] for r in rows if r["done"] is None]
    paused = forgotten | {r["id"] for r in rows if r["at_reference_nll"]}
    return [i for i in undone if i not in paused] or undone


def stop_reason(
    config: RunConfig, rows: list[dict], limits: dict, active: list[str], epoch: int
) -> str | None:
    """After an epoch: why the run ends now, or None to go on.

    `each`: every sequence done. `mean` (the paper's rule): the forget set's mean EL_n
    and MA under the thresholds, or no sample left active. Memorizing: every sequence's
    MA at the target. Out of epochs before that: `incomplete`.
    """
    if config.method == "memorize":
        if min(r["ma"] for r in rows) >= config.memorize.target_ma:
            return "criteria_met"
    elif config.stop.scope == "each":
        if all(r["done"] for r in rows):
            return "criteria_met"
    else:
        key = f"el_{config.stop.el_n}"
        # MA first: over ma_max, EL was not scored (`el_needed`) and cannot decide
        if mean(rows, "ma") < limits["ma_max"] and mean(rows, key) < limits["el_max"]:
            return "criteria_met"
        if not active:
            return "all_forgotten"
    if epoch >= config.max_epochs:
        return "incomplete"
    return None


def not_done(rows: list[dict], reference: dict | None, el_key: str) -> list[dict]:
    """The sequences still extractable by the per-sequence criteria, with the reference's
    levels beside theirs: what an `incomplete` run (or a mean-rule run) leaves behind."""
    left = []
    for r in rows:
        if r["done"] is None:
            ref = reference[r["id"]] if reference else {}
            left.append(
                {"id": r["id"], "el": r[el_key], "ma": r["ma"], "suffix_nll": r.get("suffix_nll")}
                | {f"reference_{k}": ref.get(k) for k in (el_key, "ma", "suffix_nll") if ref}
            )
    return left
