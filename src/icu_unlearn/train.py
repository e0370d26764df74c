"""The one training loop: every method (planting included), epochs over the active forget
set, IUR, stopping, checkpoints and resume.

Reads top to bottom: `unlearn()` sets the run up (`RunSetup`, fixed for the run), loops
over epochs (`RunProgress`, what changes: its fields are the checkpoint state) and
finishes. Each epoch trains (`_train_epoch`), scores (`_check_epoch`), and then the loop
applies the outcome in one place.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers.modeling_layers import GradientCheckpointingLayer

from . import checkpoint, criteria, distributed, faults, lora, refinement, run_dir
from .config import RunConfig
from .data.forget import ForgetSample
from .evaluate import summarize
from .forget_scoring import score_forget_set
from .generation import right_pad
from .io import publish_model
from .losses import kl_loss, nll_loss
from .methods import runnable
from .methods.base import Batch
from .models import weights_digest
from .precision import autocast
from .privacy import redact_row
from .run_setup import set_up
from .run_state import RunProgress, RunSetup


class Diverged(Exception):
    """A loss became NaN or infinite."""


@dataclass
class UnlearnResult:
    out: Path
    status: str  # criteria_met | all_forgotten | max_epochs | diverged | retain_damaged
    manifest: dict
    epochs: list[dict]
    samples: list[dict]

    @property
    def model_dir(self) -> Path:
        return self.out / "model"


def unlearn(
    config: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    keep_checkpoints: bool = False,
) -> UnlearnResult:
    """Run `config.method` on `config.model` until the forget set is forgotten. A finished
    run removes its checkpoints unless `keep_checkpoints` (to extend it with `resume`)."""
    setup, run = set_up(config, resume, overwrite, progress)
    try:
        _run_epochs(setup, run, progress and setup.procs.main)
    except KeyboardInterrupt:  # SIGINT: the newest checkpoint is whole; say how to go on
        run_dir.write_manifest(setup, run, status="interrupted")
        if setup.procs.main:
            print(
                f"icu-unlearn: interrupted after epoch {run.epoch}; "
                f"continue with --resume --out {setup.out}",
                file=sys.stderr,
            )
        raise
    return _finish(setup, run, keep_checkpoints)


def finish_run(config: RunConfig, progress: bool = False) -> dict:
    """The manifest of the run `config` describes, once it has ended: a run that already
    ended is read, not run again; a killed or interrupted one resumes from its newest
    checkpoint; otherwise it starts (replacing whatever else is in its folder). A run
    there made with another config is refused, whatever its state. For scripts that run
    many configurations and must go on where they were stopped."""
    out = Path(config.out)
    if (manifest := run_dir.ended(out, config)) is not None:
        return manifest
    resume = (out / "checkpoints" / "LATEST").is_file()
    return unlearn(config, resume=resume, overwrite=not resume, progress=progress).manifest


def _run_epochs(setup: RunSetup, run: RunProgress, progress: bool) -> None:
    config = setup.config
    bar = tqdm(
        total=config.max_epochs, initial=run.epoch, desc=config.method, unit="epoch",
        disable=not progress,
    )  # fmt: skip
    while run.status is None:
        epoch = run.epoch + 1
        started = time.perf_counter()
        try:
            losses = _train_epoch(setup, run.active, epoch, set(run.pushed))
        except Diverged as err:
            _recover_from_divergence(setup, run, str(err))
            break
        train_seconds = time.perf_counter() - started
        rows, states, active, check = _check_epoch(setup, run, epoch)
        exploded = criteria.perplexity_exploded(config, run.probe_before, check, epoch)
        if exploded:
            _recover_from_divergence(setup, run, exploded)
            break
        damaged = criteria.retain_damaged(config, run.probe_before, check)
        if damaged:
            _stop_for_retained(setup, run, damaged, epoch)
            break
        # the epoch's outcome: the only place the run's progress changes
        run.epoch = epoch
        run.active = active
        run.samples += [redact_row(r) for r in rows] if config.redact else rows
        row = {
            "epoch": epoch,
            **losses,
            **check,
            "train_seconds": round(train_seconds, 3),
            "seconds": round(time.perf_counter() - started, 3),
        }
        run.epochs.append(row)
        run.status = setup.rule.stop_reason(states, run.active, epoch)
        run.pushed = setup.rule.pushed(states)
        run_dir.write_logs(setup, run)
        run_dir.save_checkpoint(setup, run)
        bar.update(1)
        bar.set_postfix(active=len(run.active), **_shown(losses, check))
    bar.close()


def _shown(losses: dict, check: dict) -> dict:
    terms = {k: f"{losses[k]:.3f}" for k in ("fgt", "lrn", "loss") if k in losses}
    return terms | {k: f"{check[k]:.3f}" for k in ("el", "ma") if check.get(k) is not None}


def _train_epoch(setup: RunSetup, active: list[str], epoch: int, pushed: set[str]) -> dict:
    """One pass over the active forget samples (and their data), in a seeded order.

    A step takes `batch_size` samples of that order whatever the number of processes:
    each process takes every `world`-th of them, in `grad_accum` micro-batches, and
    weighs each micro-batch's mean loss by its share of the step, so that the summed
    (DDP: averaged, hence the factor `world`) gradient is the step's per-sample mean.
    """
    config, method, procs = setup.config, runnable(setup.config.method), setup.procs
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = [active[i] for i in torch.randperm(len(active), generator=generator)]
    size = len(order) if config.batch_size == "all" else config.batch_size
    micro = distributed.micro_size(size, config.grad_accum, procs.world)
    setup.model.train(config.dropout)  # off: eval mode, dropout and all, as the authors ran
    if config.activation_checkpointing and not config.dropout:
        _checkpoint_in_eval_mode(setup.model)
    totals: dict[str, float] = {}
    steps = 0
    for start in range(0, len(order), size):
        batch = order[start : start + size]
        mine = procs.shard(batch)
        # the same number of backward passes on every process: gradient sync is collective
        micro_steps = math.ceil(math.ceil(len(batch) / procs.world) / micro)
        setup.optimizer.zero_grad()
        held = None
        if config.relearn_step:
            held = _relearning_shift(setup, batch, mine, micro, micro_steps)
        for m in range(micro_steps):
            ids = mine[m * micro : (m + 1) * micro]
            weight = len(ids) / len(batch) * procs.world
            # a process whose share ran out joins the step with a zero-weight sample
            batches = _micro_batches(setup, ids or batch[:1], epoch, steps, pushed)
            # bf16: the forward passes under autocast; weights, Adam's moments, the loss
            # arithmetic (losses.py widens logits) and backward stay float32
            with autocast(config.precision, setup.accelerator.device):
                loss, terms = method.loss(setup.model, setup.original, batches, config)
                if setup.retain_targets is not None:
                    positions = [start + batch.index(i) for i in (ids or batch[:1])]
                    kept = _retain_term(setup, positions, epoch)
                    loss = loss + config.probe.retain_weight * kept
                    terms = terms | {"kept_kl": kept.item()}
            value = loss.item()
            (bad,) = procs.sum([0.0 if math.isfinite(value) else 1.0])
            if bad:  # on any process: every process stops here
                shown = value if not math.isfinite(value) else "non-finite on another process"
                raise Diverged(f"loss became {shown} at epoch {epoch}, step {steps + 1}")
            with procs.accumulating(setup.model, last=m == micro_steps - 1):
                procs.backward(loss * weight)
            for k, v in {"loss": value, **terms}.items():
                totals[k] = totals.get(k, 0.0) + v * len(ids)
        if held is not None:  # the gradient was taken at the shifted weights, applied here
            with torch.no_grad():
                for p, w in zip(_trained(setup.model), held, strict=True):
                    p.copy_(w)
        setup.optimizer.step()
        # freed now, not at the next step: the epoch's scoring runs without a weight-sized
        # buffer of gradients that the next step would discard anyway
        setup.optimizer.zero_grad(set_to_none=True)
        steps += 1
        faults.point("train_step", epoch)
    setup.model.eval()
    keys = sorted(totals)
    summed = dict(zip(keys, procs.sum([totals[k] for k in keys]), strict=True))
    return {k: v / len(order) for k, v in summed.items()} | {"steps": steps}


def _relearning_shift(
    setup: RunSetup, batch: list[str], mine: list[str], micro: int, micro_steps: int
) -> list[torch.Tensor]:
    """Move the trained weights by `relearn_step` against the sign of the NLL gradient of
    the step's forget sequences (whole sequences, every token after the first, as the
    relearn attack trains): where one Adam step of an attacker relearning them would take
    the model. Returns copies of the weights as they were, for a bit-exact return after
    the step's backward passes; the gradient buffers are emptied for them."""
    procs = setup.procs
    for m in range(micro_steps):
        ids = mine[m * micro : (m + 1) * micro]
        weight = len(ids) / len(batch) * procs.world
        sequences = _collate(setup, [setup.forget[i] for i in (ids or batch[:1])])
        with autocast(setup.config.precision, setup.accelerator.device):
            logits = setup.model(
                input_ids=sequences.input_ids, attention_mask=sequences.attention_mask
            ).logits
            every = torch.ones_like(sequences.prefix_lengths)  # from position 1
            loss = nll_loss(logits, sequences.input_ids, sequences.attention_mask, every)
        with procs.accumulating(setup.model, last=m == micro_steps - 1):
            procs.backward(loss * weight)
    held = []
    with torch.no_grad():
        for p in _trained(setup.model):
            held.append(p.detach().clone())
            if p.grad is not None:
                p.sub_(setup.config.relearn_step * torch.sign(p.grad))
    setup.optimizer.zero_grad(set_to_none=True)
    return held


def _trained(model) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _retain_term(setup: RunSetup, positions: list[int], epoch: int) -> torch.Tensor:
    """KL(P_input || P_theta) at every position of kept records (`probe.retain`), one for
    each forget sample of the micro-batch: the sample at place j of the epoch's order
    takes the kept record at place j of a seeded order of them (cycling), so that every
    process and micro-batch split takes the same records."""
    kept = setup.probes["retain"]
    generator = torch.Generator().manual_seed(setup.config.seed * 100_019 + epoch)
    order = torch.randperm(len(kept), generator=generator).tolist()
    samples = [kept[order[j % len(kept)]] for j in positions]
    batch = _collate(setup, samples)
    target = _stacked(setup.retain_targets, samples, batch.input_ids)
    logits = setup.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    every = torch.ones_like(batch.prefix_lengths)  # from position 1
    return kl_loss(logits, target, batch.attention_mask, every)


def _stacked(targets: dict, samples: list[ForgetSample], ids: torch.Tensor) -> torch.Tensor:
    """(B, T, V) bfloat16 on `ids`' device: each position of each sample that predicts a
    token holds its stored log-probabilities (`criteria.reference_targets`); padding 0."""
    vocab = targets[samples[0].id].shape[-1]
    target = torch.zeros(*ids.shape, vocab, dtype=torch.bfloat16)
    for row, sample in enumerate(samples):
        rows = targets[sample.id]
        target[row, : len(rows)] = rows
    return target.to(ids.device)


def _checkpoint_in_eval_mode(model) -> None:
    """Activation checkpointing with dropout off. transformers checkpoints a decoder layer
    only when that layer module is in training mode; the layer's own `training` flag
    gates nothing else, and its submodules (dropout, attention) stay in eval mode."""
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.training = True


def _micro_batches(
    setup: RunSetup, ids: list[str], epoch: int, step: int, pushed: set[str]
) -> dict[str, Batch]:
    """The forget samples `ids` and, per kind the method needs, their data at this step."""
    forget = [setup.forget[i] for i in ids]
    batches = {"forget": _collate(setup, forget, forget=True, pushed=pushed)}
    data = setup.data.for_step(setup.forget, ids, setup.config.seed, epoch, step)
    for kind, samples in data.items():
        batches[kind] = _collate(setup, samples)
    return batches


def _collate(
    setup: RunSetup,
    samples: list[ForgetSample],
    forget: bool = False,
    pushed: set[str] = frozenset(),
) -> Batch:
    """Right-padded ids; the forget batch also carries what its forget term needs (the
    token floor, the reference's distributions, or the calibrated level)."""
    device = setup.accelerator.device
    ids, mask = right_pad([s.input_ids for s in samples], setup.tokenizer.pad_token_id, device)
    t0 = torch.tensor([s.prefix_length for s in samples], device=device)
    if not forget:
        return Batch(ids, mask, t0)
    if setup.forget_target == "reference":
        target = _stacked(setup.reference_targets, samples, ids)
        level = torch.tensor([setup.reference_scores[s.id]["suffix_nll"] for s in samples])
        level += _pushes(setup, samples, pushed)
        weight = setup.config.prefix_weight
        return Batch(ids, mask, t0, target=target, level=level.to(device), prefix_weight=weight)
    if setup.forget_target == "calibrated":
        level = torch.full((len(samples),), setup.thresholds["holdout_nll"])
        level += _pushes(setup, samples, pushed)
        return Batch(ids, mask, t0, level=level.to(device))
    margin = setup.config.stop.token_floor
    if margin is None:
        return Batch(ids, mask, t0)
    # the reference's log-probability of each token, less the margin; padding: none
    floor = torch.full((len(samples), ids.shape[1] - 1), -math.inf, device=device)
    for row, sample in enumerate(samples):
        reference = setup.reference_scores[sample.id]["token_logprobs"]
        floor[row, : len(reference)] = torch.tensor(reference, device=device) - margin
    return Batch(ids, mask, t0, floor)


def _pushes(setup: RunSetup, samples: list[ForgetSample], pushed: set[str]) -> torch.Tensor:
    """(B,) nats a token added to each sample's level: half the `stands_out` margin for a
    record at never-seen text's level and still extractable (a licence the model still
    writes out greedily at the reference's likelihood), none for the others. Half: the
    push ends inside the band where the record neither leaks nor stands out."""
    push = setup.config.audit.stands_out_margin / 2
    return torch.tensor([push if s.id in pushed else 0.0 for s in samples])


def _check_epoch(setup: RunSetup, run: RunProgress, epoch: int):
    """Score the whole forget set, decide per sequence, then the IUR check.

    Returns the epoch's per-sample rows, their decided states, the samples that train
    next, and the epoch log's metrics.
    """
    config, procs, rule = setup.config, setup.procs, setup.rule
    timings: dict = {}
    active = run.active
    everything = epoch >= config.max_epochs
    rows, states = _score_forget_set(setup, run, timings, everything)
    faults.point("iur_check", epoch)
    started = time.perf_counter()
    removed: set[str] = set()
    if runnable(config.method).refines and config.refinement.enabled:
        # every process holds every row; the main process decides, the others take its word
        removed = procs.decide(
            refinement.forgotten_now(
                setup.unwrapped, setup.tokenizer, setup.forget, rows,
                rule.to_check(states, active), config.refinement, setup.scoring, procs,
            )
        )  # fmt: skip
    # The IUR check: BERTScore + BLEU of the generations (greedy ones come with EL for free)
    check_seconds = time.perf_counter() - started + timings.get("similarity_seconds", 0.0)
    following = rule.next_active(states, removed, active)
    for r in rows:
        r |= {"epoch": epoch, "active": r["id"] in active, "removed": r["id"] in removed}
    means = summarize(rows, config.stop.el_n)
    scored = {"el": f"el_{config.stop.el_n}", "ma": "ma", "bertscore_f1": "bertscore_f1"}
    check = {
        "active_before": len(active),
        "active": len(following),
        "removed": len(removed),
        "readmitted": len(set(following) - set(active)),
        **({"done": sum(1 for s in states if s.done)} if rule.scores_el else {}),
        # EL where it could decide something (log.el_every_epoch: every sequence)
        **({"el_scored": sum(1 for s in states if s.el_measured)} if rule.scores_el else {}),
        **{name: means[key] for name, key in (scored | {"bleu": "bleu"}).items() if key in means},
    }
    started = time.perf_counter()
    check |= criteria.measure_probes(
        setup.unwrapped, setup.tokenizer, setup.probes, setup.scoring, procs,
        setup.drafts(run),
    )  # fmt: skip
    # where the scoring time went: MA (one teacher-forced pass), EL and the generation
    # (decoding), the IUR check (BERTScore + BLEU, beams), the probes
    metrics = timings.get("memorization_seconds", 0.0)
    ma_seconds = timings.get("teacher_forced_seconds", 0.0)
    check |= {
        "metrics_seconds": round(metrics, 3),
        "ma_seconds": round(ma_seconds, 3),
        "el_seconds": round(metrics - ma_seconds, 3),
        "check_seconds": round(check_seconds, 3),
        "probe_seconds": round(time.perf_counter() - started, 3),
    }
    return rows, states, following, check


def _score_forget_set(
    setup: RunSetup, run: RunProgress, timings: dict | None = None, everything: bool = False
):
    """The forget set scored and decided, last scoring's continuations verified."""
    return score_forget_set(
        setup.rule, setup.unwrapped, setup.tokenizer, list(setup.forget.values()),
        setup.scoring, setup.procs, timings, everything,
        setup.drafts(run),
    )  # fmt: skip


def _score_the_end(setup: RunSetup, run: RunProgress) -> None:
    """The last epoch's rows, whole: EL where the lazy schedule skipped it (a run that
    ended early, by IUR or divergence), so that every result holds every score."""
    el_key = f"el_{setup.config.stop.el_n}"
    last = [r for r in run.samples if r["epoch"] == run.epoch]
    if not any(el_key in r and r[el_key] is None for r in last):
        return
    full, _ = _score_forget_set(setup, run, everything=True)
    by_id = {r["id"]: r for r in full}
    for r in last:
        r[el_key], r["done"] = by_id[r["id"]][el_key], by_id[r["id"]]["done"]
    logged = next(e for e in run.epochs if e["epoch"] == run.epoch and "diverged" not in e)
    logged |= {"el": summarize(full, setup.config.stop.el_n)[el_key], "el_scored": len(full)}
    run_dir.write_logs(setup, run)


def _stop_for_retained(setup: RunSetup, run: RunProgress, damaged: dict, epoch: int) -> None:
    """Retained records lost what they held: stop as the perplexity bound does, with a
    status of its own, and keep the model of the epoch before."""
    drop = setup.config.probe.retain_max_ma_drop
    reason = (
        f"retained record(s) {', '.join(damaged)} lost more than {drop} of their MA before "
        f"the run at epoch {epoch}"
    )
    _recover_from_divergence(setup, run, reason, status="retain_damaged", damaged=damaged)


def _recover_from_divergence(
    setup: RunSetup,
    run: RunProgress,
    reason: str,
    status: str = "diverged",
    damaged: dict | None = None,
) -> None:
    """Keep the last good model and run state: the newest checkpoint, or the input model."""
    latest = checkpoint.latest(setup.out / "checkpoints")  # epoch 0 at least: the input model
    state = checkpoint.load(latest, setup.model, setup.optimizer, setup.procs)
    run.active, run.epochs, run.samples = state["active"], state["epochs"], state["samples"]
    run.status = status
    stopped = {"epoch": run.epoch + 1, "diverged": reason, "kept_epoch": run.epoch}
    # the damaged records' EL and MA at the epoch that damaged them (the kept model's are before)
    run.epochs.append(stopped | ({"retain_damaged": damaged} if damaged else {}))
    run_dir.write_logs(setup, run)
    if setup.procs.main:
        print(
            f"icu-unlearn: {reason}; stopped and kept the model of epoch {run.epoch}",
            file=sys.stderr,
        )


def _original_check(setup: RunSetup) -> dict | None:
    """Proof that the frozen original model stayed what it was when the run began."""
    if setup.original is None:
        return None
    if setup.procs.lockstep:
        return {"sha256": None, "unchanged": None, "kind": "sharded frozen copy (not digested)"}
    now = weights_digest(setup.original)
    kind = "adapters disabled" if setup.config.lora.r > 0 else "frozen copy"
    return {"sha256": now, "unchanged": now == setup.original_sha256, "kind": kind}


def _audit(setup: RunSetup) -> dict:
    """The audit of the published model (audit.json), summarised for the manifest."""
    config = setup.config
    if not config.audit.enabled or not setup.rule.audits:
        return {
            "skipped": "audit.enabled is false" if config.audit.enabled is False else "planting"
        }
    if setup.procs.lockstep or (config.lora.r > 0 and config.lora.save == "adapter"):
        return {"skipped": "the model is not whole here; run icu-unlearn audit on it"}
    from .audit import audit

    settings = config.audit.settings(
        el_n=config.stop.el_n,
        el_window=config.stop.el_window,
        el_max=min(max(setup.thresholds["el_max"], 0.0), 1.0),  # a leak test needs [0, 1]
        batch_size=config.eval.batch_size,
        decode_batch_size=config.eval.decode_batch_size,
        precision=config.precision,
    )
    result = audit(
        str(setup.out / "model"),
        list(setup.forget.values()),
        holdout=config.audit.holdout,
        reference=config.stop.reference,
        settings=settings,
        out=setup.out,
        redact=config.redact,
        attacks=config.audit.attacks,
        data_dir=config.data_dir,
        prefix_length=config.prefix_length,
    )
    aggregates = result.aggregates
    return {
        "summary": result.summary_line(),
        "verdicts": aggregates["verdicts"],
        "leaked_by": aggregates["leaked_by"],
        "stands_out": aggregates["stands_out"],
        "membership": aggregates["membership"],
        "file": "audit.json",
    }


def _release_training_state(setup: RunSetup) -> None:
    """Past the last epoch and its checkpoint, the optimizer's moments (twice the weights
    under Adam) and the frozen original model serve nothing: freed before the audit
    loads its models. Sharded runs keep theirs (their engines own them); LoRA's original
    is the trained model itself."""
    if setup.procs.lockstep:
        return
    setup.optimizer.state.clear()
    if setup.original is not None and setup.config.lora.r == 0:
        setup.original.to("meta")


def _finish(setup: RunSetup, run: RunProgress, keep_checkpoints: bool) -> UnlearnResult:
    _score_the_end(setup, run)
    original = _original_check(setup)  # before a LoRA merge changes the base
    # sharded weights are gathered whole (a collective); replicated ones are whole already
    weights = setup.accelerator.get_state_dict(setup.model) if setup.procs.lockstep else None
    if setup.procs.main:

        def save(folder: Path) -> None:
            if setup.config.lora.r > 0:
                lora.save(setup.unwrapped, folder, setup.config.lora)
            else:
                setup.unwrapped.save_pretrained(folder, state_dict=weights, safe_serialization=True)
            setup.tokenizer.save_pretrained(folder)

        publish_model(setup.out / "model", save)
    _release_training_state(setup)
    audited = _audit(setup) if setup.procs.main else None
    record = run_dir.write_manifest(setup, run, finished=True, original=original, audit=audited)
    setup.procs.wait()
    if setup.procs.main and not keep_checkpoints:  # last: a crash before it can still resume
        run_dir.remove_checkpoints(setup.out)
    return UnlearnResult(setup.out, run.status, record, run.epochs, run.samples)
