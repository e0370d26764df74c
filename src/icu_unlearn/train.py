"""The one training loop: every method, epochs over the active forget set, IUR, stopping,
checkpoints and resume. Reads top to bottom: `unlearn()` sets up, `_run_epochs()` loops.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from tqdm.auto import tqdm

from . import checkpoint, distributed, faults, lora
from .config import RunConfig, dump_config
from .data.forget import ForgetSample, load_forget_set
from .data.pool import load_pool
from .errors import UsageError
from .evaluate import EvalSettings, score_samples, summarize
from .generation import generate_continuations, right_pad
from .io import atomic_write_json, atomic_write_jsonl, atomic_write_text, temp_dir
from .methods import METHODS
from .methods.base import MISMATCH, PAIRS, REFUSAL, Batch
from .metrics.memorization import memorization_scores
from .metrics.perplexity import log_likelihood, perplexity_from
from .metrics.similarity import bertscore_f1, sentence_bleu, token_entropy
from .models import describe_model, load_model_and_tokenizer, weights_digest
from .pairing import embed, pair
from .privacy import redact_row, redact_text
from .refinement import is_forgotten

RUN_FILES = ("manifest.json", "epochs.jsonl", "samples.jsonl", "pairs.jsonl", "config.yaml")


class Diverged(Exception):
    """A loss became NaN or infinite."""


@dataclass
class UnlearnResult:
    out: Path
    status: str  # criteria_met | all_forgotten | max_epochs | diverged
    manifest: dict
    epochs: list[dict]
    samples: list[dict]

    @property
    def model_dir(self) -> Path:
        return self.out / "model"


@dataclass
class _Run:
    config: RunConfig
    out: Path
    model: torch.nn.Module
    tokenizer: object
    reference: torch.nn.Module | None
    forget: dict[str, ForgetSample]
    data: dict[str, dict[str, list[ForgetSample]]]  # kind (PAIRS...) -> forget id -> samples
    pair_stats: dict | None
    optimizer: torch.optim.Optimizer
    accelerator: Accelerator
    procs: distributed.Processes
    thresholds: dict
    probes: dict[str, list[ForgetSample]]  # "retain" / "heldout" sequences watched each epoch
    epoch: int = 0
    active: list[str] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    status: str | None = None
    probe_before: dict = field(default_factory=dict)
    reference_sha256: str | None = None  # the frozen model's weights when the run began
    parameters: dict = field(default_factory=dict)  # total and trainable (LoRA: adapters)
    reference_check: dict | None = None  # at the end, before a LoRA merge changes the base


PROBE_KEYS = ("retain_el", "retain_ma", "heldout_ppl")


def unlearn(
    config: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> UnlearnResult:
    """Run `config.method` on `config.model` until the forget set is forgotten."""
    config.require()
    if not config.out:
        raise UsageError("the run has no output directory; give --out DIR or set out in the config")
    out = Path(config.out).expanduser()
    _check_out(out, config, resume, overwrite)
    # Several processes under `accelerate launch`; one otherwise.
    accelerator = distributed.make_accelerator()
    procs = distributed.Processes(accelerator)
    distributed.check_launch(accelerator, config.batch_size, config.grad_accum)
    if config.lora.r > 0 and procs.lockstep:
        raise UsageError("LoRA runs need replicated weights: launch with DDP or DeepSpeed ZeRO-2")
    progress = progress and procs.main
    torch.manual_seed(config.seed)
    with accelerator.main_process_first():  # a model cache (GGUF -> safetensors) is built once
        model, tokenizer = load_model_and_tokenizer(config.model, config.trust_remote_code)
    forget = load_forget_set(
        config.forget,
        tokenizer,
        config.prefix_length,
        config.data_dir,
        vocab_size=model.get_input_embeddings().num_embeddings,
    )
    method = METHODS[config.method]
    needs_ref = method.uses_reference(config)
    thresholds = _thresholds(config, model, tokenizer, forget, procs)
    probes = _load_probes(config, tokenizer, forget, model.get_input_embeddings().num_embeddings)
    # Before the pool is embedded (minutes, with a progress bar): a forget set that cannot
    # be scored, or is already forgotten, fails fast on one line.
    initial = None
    if not resume:
        initial = _initial_scores(config, model, tokenizer, forget, thresholds, procs)
    with accelerator.main_process_first():  # the pool's embeddings are cached once
        data, pair_stats, pair_rows = _method_data(
            config, method.needs(config), forget, tokenizer, progress
        )
    # Every input is checked by now: only from here on does the run write anything.
    if procs.main:
        if overwrite and not resume:
            _clear(out)
        out.mkdir(parents=True, exist_ok=True)
        if pair_rows is not None:
            if config.redact:  # analogous texts share phrases with the forgotten ones by design
                pair_rows = [r | {"learn_text": redact_text(r["learn_text"])} for r in pair_rows]
            atomic_write_jsonl(out / "pairs.jsonl", pair_rows)
    procs.wait()
    reference = None
    if config.lora.r > 0:
        model = lora.add_adapters(model, config.lora)
        if needs_ref:  # the base model is the adapted one with adapters off: no second copy
            reference = lora.AdaptersOff(model)
    elif needs_ref:  # the frozen original model, computing P_theta0 on the fly
        reference = distributed.prepare_reference(accelerator, model)
    # foreach=False: the multi-tensor step allocates a temporary per parameter group,
    # a transient copy of the model's size on top of weights, gradients and moments.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, foreach=False)
    model, optimizer = accelerator.prepare(model, optimizer)
    run = _Run(
        config,
        out,
        model,
        tokenizer,
        reference,
        {s.id: s for s in forget},
        data,
        pair_stats,
        optimizer,
        accelerator,
        procs,
        thresholds,
        probes,
        active=[s.id for s in forget],
    )
    run.parameters = _parameter_counts(_unwrap(run))
    if reference is not None and not procs.lockstep:  # sharded: no process holds it whole
        run.reference_sha256 = weights_digest(reference)
    latest = checkpoint.latest(out / "checkpoints") if resume else None
    if latest is not None:
        _restore(run, latest)
    else:
        if procs.main:
            atomic_write_text(out / "config.yaml", dump_config(config))
        _log_epoch_zero(run, initial)
        _write_manifest(run)
        # epoch 0 = the input model: what divergence in the first epoch returns to
        _save_checkpoint(run)
    try:
        _run_epochs(run, progress)
    except KeyboardInterrupt:  # SIGINT: the newest checkpoint is whole; say how to go on
        _write_manifest(run, status="interrupted")
        if procs.main:
            print(
                f"icu-unlearn: interrupted after epoch {run.epoch}; "
                f"continue with --resume --out {out}",
                file=sys.stderr,
            )
        raise
    return _finish(run)


def _run_epochs(run: _Run, progress: bool) -> None:
    config = run.config
    bar = tqdm(
        total=config.max_epochs,
        initial=run.epoch,
        desc=config.method,
        unit="epoch",
        disable=not progress,
    )
    while run.status is None:
        epoch = run.epoch + 1
        started = time.perf_counter()
        try:
            losses = _train_epoch(run, epoch)
        except Diverged as err:
            _recover_from_divergence(run, str(err))
            break
        train_seconds = time.perf_counter() - started
        check = _check_epoch(run, epoch)
        exploded = _perplexity_exploded(run, check)
        if exploded:
            _recover_from_divergence(run, exploded)
            break
        run.epoch = epoch
        row = {
            "epoch": epoch,
            **losses,
            **check,
            "train_seconds": round(train_seconds, 3),
            "seconds": round(time.perf_counter() - started, 3),
        }
        run.epochs.append(row)
        run.status = _stop_reason(run, row)
        _write_logs(run)
        _save_checkpoint(run)
        bar.update(1)
        bar.set_postfix(
            active=len(run.active),
            fgt=f"{losses.get('fgt', 0):.3f}",
            lrn=f"{losses.get('lrn', 0):.3f}",
            kl=f"{losses.get('kl', 0):.4f}",
            el=f"{check['el']:.3f}",
            ma=f"{check['ma']:.3f}",
        )
    bar.close()


def _train_epoch(run: _Run, epoch: int) -> dict:
    """One pass over the active forget samples (and their data), in a seeded order.

    A step takes `batch_size` samples of that order whatever the number of processes:
    each process takes every `world`-th of them, in `grad_accum` micro-batches, and
    weighs each micro-batch's mean loss by its share of the step, so that the summed
    (DDP: averaged, hence the factor `world`) gradient is the step's per-sample mean.
    """
    config, method, procs = run.config, METHODS[run.config.method], run.procs
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = [run.active[i] for i in torch.randperm(len(run.active), generator=generator)]
    size = len(order) if config.batch_size == "all" else config.batch_size
    micro = _micro_size(size, config.grad_accum, procs.world)
    run.model.train()
    totals: dict[str, float] = {}
    steps = 0
    for start in range(0, len(order), size):
        batch = order[start : start + size]
        mine = procs.shard(batch)
        # the same number of backward passes on every process: gradient sync is collective
        largest_share = math.ceil(len(batch) / procs.world)
        micro_steps = math.ceil(largest_share / micro)
        run.optimizer.zero_grad()
        for m in range(micro_steps):
            ids = mine[m * micro : (m + 1) * micro]
            weight = len(ids) / len(batch) * procs.world
            # a process whose share ran out joins the step with a zero-weight sample
            batches = _micro_batches(run, ids or batch[:1])
            loss, terms = method.loss(run.model, run.reference, batches, config)
            value = loss.item()
            (bad,) = procs.sum([0.0 if math.isfinite(value) else 1.0])
            if bad:  # on any process: every process stops here
                shown = value if not math.isfinite(value) else "non-finite on another process"
                raise Diverged(f"loss became {shown} at epoch {epoch}, step {steps + 1}")
            with procs.accumulating(run.model, last=m == micro_steps - 1):
                procs.backward(loss * weight)
            for k, v in {"loss": value, **terms}.items():
                totals[k] = totals.get(k, 0.0) + v * len(ids)
        run.optimizer.step()
        steps += 1
        faults.point("train_step", epoch)
    run.model.eval()
    keys = sorted(totals)
    summed = dict(zip(keys, procs.sum([totals[k] for k in keys]), strict=True))
    return {k: v / len(order) for k, v in summed.items()} | {"steps": steps}


def _micro_batches(run: _Run, ids: list[str]) -> dict[str, Batch]:
    """The forget samples `ids` and, per kind the method needs, their data."""
    batches = {"forget": _collate([run.forget[i] for i in ids], run)}
    for kind, by_id in run.data.items():
        batches[kind] = _collate([s for i in ids for s in by_id[i]], run)
    return batches


def _collate(samples: list[ForgetSample], run: _Run) -> Batch:
    device = run.accelerator.device
    ids, mask = right_pad([s.input_ids for s in samples], run.tokenizer.pad_token_id, device)
    t0 = torch.tensor([s.prefix_length for s in samples], device=device)
    return Batch(ids, mask, t0)


def _check_epoch(run: _Run, epoch: int) -> dict:
    """EL/MA of the whole forget set, then the IUR check of the active samples."""
    config = run.config
    timings: dict = {}
    rows = _score_forget_set(run, timings)
    faults.point("iur_check", epoch)
    started = time.perf_counter()
    refines = METHODS[config.method].refines and config.refinement.enabled
    # every process holds every row; the main process decides, the others take its word
    forgotten = run.procs.decide(_refine(run, rows) if refines else set())
    # The IUR check: BERTScore + BLEU of the generations (greedy ones come with EL for free)
    check_seconds = time.perf_counter() - started + timings["similarity_seconds"]
    active_before = len(run.active)
    for r in rows:
        r |= {"epoch": epoch, "active": r["id"] in run.active, "removed": r["id"] in forgotten}
    run.active = [i for i in run.active if i not in forgotten]
    run.samples += [redact_row(r) for r in rows] if config.redact else rows
    means = summarize(rows, config.stop.el_n)
    return {
        "active_before": active_before,
        "active": len(run.active),
        "removed": len(forgotten),
        "el": means[f"el_{config.stop.el_n}"],
        "ma": means["ma"],
        "bertscore_f1": means["bertscore_f1"],
        "bleu": means["bleu"],
        **_probe(run),
        "metrics_seconds": round(timings["memorization_seconds"], 3),
        "check_seconds": round(check_seconds, 3),
    }


def _probe(run: _Run) -> dict:
    """What the run must not break: MA/EL of retained sequences, held-out perplexity."""
    model, pad, config, procs = _unwrap(run), run.tokenizer.pad_token_id, run.config, run.procs
    result = {}
    if "retain" in run.probes:
        samples = run.probes["retain"]
        result["retain_el"], result["retain_ma"] = _mean_el_ma(model, pad, samples, config, procs)
    if "heldout" in run.probes:
        sequences = procs.score_share([s.input_ids for s in run.probes["heldout"]])
        total, count = log_likelihood(model, sequences, pad, config.eval_batch_size)
        if not procs.lockstep:
            total, count = procs.sum([total, count])
        result["heldout_ppl"] = perplexity_from(total, int(count))
    return result


def _score_forget_set(run: _Run, timings: dict | None = None) -> list[dict]:
    samples = list(run.forget.values())
    return _score(_unwrap(run), run.tokenizer, samples, run.config, run.procs, timings)


def _score(model, tokenizer, samples, config: RunConfig, procs, timings=None) -> list[dict]:
    """Per-sample metrics of `samples`, each process scoring its share."""
    mine = procs.score_share(samples)
    if not mine:  # fewer samples than processes
        if timings is not None:
            timings |= {"memorization_seconds": 0.0, "similarity_seconds": 0.0}
        return procs.gather([])
    settings = EvalSettings(
        el_n=config.stop.el_n,
        el_window=config.stop.el_window,
        batch_size=config.eval_batch_size,
        decode_batch_size=config.eval_decode_batch_size,
        bertscore_model=config.refinement.bertscore_model,
        bertscore_layers=config.refinement.bertscore_layers,
    )
    return procs.gather(score_samples(model, tokenizer, mine, settings, timings=timings))


def _refine(run: _Run, rows: list[dict]) -> set[str]:
    """Eq. 5 on the active samples; beam search regenerates when num_beams > 1."""
    config = run.config.refinement
    active = [r for r in rows if r["id"] in run.active]
    if config.num_beams > 1:  # each process regenerates its share; every one gets all
        extras = run.procs.gather(_beam_check(run, run.procs.score_share(active)))
        for r, extra in zip(active, extras, strict=True):
            r |= extra
    key = "iur_" if config.num_beams > 1 else ""
    return {
        r["id"] for r in active if is_forgotten(r[f"{key}bertscore_f1"], r[f"{key}bleu"], config)
    }


def _beam_check(run: _Run, rows: list[dict]) -> list[dict]:
    """Beam-search generations of `rows`' samples with their BERTScore, BLEU, entropy."""
    if not rows:
        return []
    config = run.config.refinement
    samples = [run.forget[r["id"]] for r in rows]
    gens = generate_continuations(
        _unwrap(run),
        [list(s.prefix_ids) for s in samples],
        [len(s.suffix_ids) for s in samples],
        run.tokenizer.pad_token_id,
        num_beams=config.num_beams,
        batch_size=run.config.eval_batch_size,
    )
    texts = [run.tokenizer.decode(g, skip_special_tokens=True) for g in gens]
    refs = [s.suffix for s in samples]
    bert = bertscore_f1(texts, refs, config.bertscore_model, config.bertscore_layers)
    bleu = sentence_bleu(texts, refs)
    return [
        {"iur_generation": t, "iur_bertscore_f1": b, "iur_bleu": u, "iur_entropy": token_entropy(g)}
        for t, g, b, u in zip(texts, gens, bert, bleu, strict=True)
    ]


def _stop_reason(run: _Run, row: dict) -> str | None:
    if row["el"] < run.thresholds["el_max"] and row["ma"] < run.thresholds["ma_max"]:
        return "criteria_met"
    if not run.active:
        return "all_forgotten"
    if run.epoch >= run.config.max_epochs:
        return "max_epochs"
    return None


def _mean_el_ma(model, pad_token_id: int, samples, config: RunConfig, procs):
    """Mean EL_n and MA of `samples`: the retain probe and the auto thresholds."""
    mine = procs.score_share(samples)
    pairs = []
    if mine:
        scores = memorization_scores(
            model,
            [s.input_ids for s in mine],
            [s.prefix_length for s in mine],
            pad_token_id,
            n=config.stop.el_n,
            window=config.stop.el_window,
            batch_size=config.eval_batch_size,
            decode_batch_size=config.eval_decode_batch_size,
        )
        pairs = list(zip(scores.extraction_likelihood, scores.memorization_accuracy, strict=True))
    pairs = procs.gather(pairs)
    n = len(samples)
    return sum(el for el, _ in pairs) / n, sum(ma for _, ma in pairs) / n


def _perplexity_exploded(run: _Run, check: dict) -> str | None:
    ratio = run.config.probe.max_perplexity_ratio
    if ratio is None:
        return None
    before, now = run.probe_before["heldout_ppl"], check["heldout_ppl"]
    if math.isfinite(now) and now <= ratio * before:
        return None
    return f"held-out perplexity {now:.2f} exceeded {ratio} x {before:.2f} at epoch {run.epoch + 1}"


def _recover_from_divergence(run: _Run, reason: str) -> None:
    """Keep the last good model and run state: the newest checkpoint, or the input model."""
    latest = checkpoint.latest(run.out / "checkpoints")  # epoch 0 at least: the input model
    state = checkpoint.load(latest, run.model, run.optimizer, run.procs)
    run.active, run.epochs, run.samples = state["active"], state["epochs"], state["samples"]
    run.status = "diverged"
    run.epochs.append({"epoch": run.epoch + 1, "diverged": reason, "kept_epoch": run.epoch})
    _write_logs(run)
    if run.procs.main:
        print(
            f"icu-unlearn: {reason}; stopped and kept the model of epoch {run.epoch}",
            file=sys.stderr,
        )


def _unwrap(run: _Run):
    return run.accelerator.unwrap_model(run.model)


# ---------------------------------------------------------------- set-up helpers


def _check_out(out: Path, config: RunConfig, resume: bool, overwrite: bool) -> None:
    model_path = Path(config.model).expanduser()
    if model_path.exists() and (
        out.resolve() == model_path.resolve() or model_path.resolve() in out.resolve().parents
    ):
        raise UsageError(f"--out {out} is inside the input model folder; choose another directory")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    if resume:
        if not (out / "checkpoints" / "LATEST").exists():
            raise UsageError(
                f"nothing to resume in {out}: it has no checkpoint; run without --resume"
            )
        saved = (out / "config.yaml").read_text() if (out / "config.yaml").exists() else ""
        if saved and _resumable(yaml.safe_load(saved)) != _resumable(config.to_dict()):
            raise UsageError(
                f"the config differs from the one {out} was started with; "
                "resume with the same config, or start a new --out"
            )
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(
            f"{out} already holds files; use --resume to continue that run, "
            "--overwrite to replace it, or another --out"
        )
    probe = out if out.exists() else next(p for p in out.parents if p.exists())
    try:  # a real write: permission bits say nothing for root or read-only mounts
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError:
        raise UsageError(f"cannot write to {probe}; choose a writable --out") from None


def _resumable(config: dict) -> dict:
    """What must match to resume: everything but max_epochs (a run may be extended)."""
    return {k: v for k, v in config.items() if k != "max_epochs"}


def _clear(out: Path) -> None:
    for name in (*RUN_FILES, "model", "checkpoints"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _thresholds(config: RunConfig, model, tokenizer, forget, procs) -> dict:
    stop = config.stop
    if stop.thresholds == "fixed":
        return {"el_max": stop.el_max, "ma_max": stop.ma_max, "source": "fixed"}
    heldout = load_forget_set(stop.heldout, tokenizer, config.prefix_length, config.data_dir)
    overlap = {s.content_hash() for s in heldout} & {s.content_hash() for s in forget}
    if overlap:
        raise UsageError("stop.heldout shares samples with the forget set; choose other sequences")
    el, ma = _mean_el_ma(model, tokenizer.pad_token_id, heldout, config, procs)
    return {
        "el_max": el,
        "ma_max": ma,
        "source": f"auto: {stop.heldout}",
    }


def _load_probes(config: RunConfig, tokenizer, forget, vocab_size) -> dict:
    probes = {}
    for name in ("retain", "heldout"):
        spec = getattr(config.probe, name)
        if spec:
            samples = load_forget_set(
                spec, tokenizer, config.prefix_length, config.data_dir, vocab_size
            )
            overlap = {s.content_hash() for s in samples} & {s.content_hash() for s in forget}
            if overlap:
                raise UsageError(
                    f"probe.{name} shares {len(overlap)} samples with the forget set; "
                    "give sequences that are not to be forgotten"
                )
            probes[name] = samples
    return probes


def _method_data(config: RunConfig, needs: set, forget: list[ForgetSample], tokenizer, progress):
    """What the method trains on besides the forget set, per forget sample, plus the
    pairing's statistics and pairs.jsonl rows (None when there is no pairing)."""
    data: dict[str, dict[str, list[ForgetSample]]] = {}
    stats, rows = None, None
    if needs & {PAIRS, MISMATCH}:
        a = config.analogous
        pool = load_pool(a.pool, forget, tokenizer, a.pool_limit, config.data_dir)
        forget_texts = [s.prefix + s.suffix for s in forget]
        members = {" ".join(t.split()) for t in forget_texts}
        member_mask = [" ".join(t.split()) in members for t in pool.texts]

        def pool_sample(index: int) -> ForgetSample:
            return pool.learn_sample(
                index, tokenizer, config.prefix_length, a.max_tokens, config.data_dir
            )

    if PAIRS in needs:
        data[PAIRS], stats, rows = _pairs(config, forget, forget_texts, pool, member_mask, progress)
        data[PAIRS] = {fid: [pool_sample(i) for i in idx] for fid, idx in data[PAIRS].items()}
    if MISMATCH in needs:
        candidates = [i for i, member in enumerate(member_mask) if not member]
        if not candidates:
            raise UsageError("the analogous pool has no texts outside the forget set")
        data[MISMATCH] = {}
        for s in forget:  # a seeded draw per sample: the same whatever the sample order
            index = candidates[_seeded_index(f"{config.seed}:{s.id}", len(candidates))]
            other = pool_sample(index)
            data[MISMATCH][s.id] = [
                ForgetSample(f"mismatch:{s.id}", s.prefix_ids, other.suffix_ids, s.prefix, "")
            ]
    if REFUSAL in needs:
        refusals = config.dpo.refusals
        data[REFUSAL] = {}
        for s in forget:
            text = " " + refusals[_seeded_index(f"{config.seed}:{s.id}", len(refusals))].strip()
            ids = tuple(tokenizer(text, add_special_tokens=False).input_ids)
            data[REFUSAL][s.id] = [
                ForgetSample(f"refusal:{s.id}", s.prefix_ids, ids, s.prefix, text)
            ]
    return data, stats, rows


def _seeded_index(key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


def _pairs(config: RunConfig, forget, forget_texts, pool, member_mask, progress: bool):
    """Each forget sample's k analogous pool rows (paper Eq. 2), with what pairs.jsonl holds."""
    import numpy as np

    a = config.analogous
    pairing = pair(
        [s.id for s in forget],
        embed(forget_texts, a.encoder),
        embed(pool.texts, a.encoder, progress=progress),
        np.array(member_mask),
        a.k,
        a.max_similarity,
    )
    indices = {fid: [p.pool_index for p in ps] for fid, ps in pairing.pairs.items()}
    stats = {
        "pairs": len(pairing.to_rows()),
        "excluded_members": pairing.excluded_members,
        "excluded_near_copies": pairing.excluded_near_copies,
        "pool": pool.spec,
        "pool_size": len(pool.texts),
    }
    rows = [r | {"learn_text": pool.texts[r["pool_index"]]} for r in pairing.to_rows()]
    return indices, stats, rows


# ---------------------------------------------------------------- state and files


def _state(run: _Run) -> dict:
    return {
        "epoch": run.epoch,
        "active": run.active,
        "status": run.status,
        "thresholds": run.thresholds,
        "epochs": run.epochs,
        "samples": run.samples,
        "probe_before": run.probe_before,
    }


def _save_checkpoint(run: _Run) -> None:
    root = run.out / "checkpoints"
    checkpoint.save(root, run.epoch, run.model, run.optimizer, _state(run), run.procs)


def _restore(run: _Run, path: Path) -> None:
    state = checkpoint.load(path, run.model, run.optimizer, run.procs)
    run.epoch, run.active, run.status = state["epoch"], state["active"], state["status"]
    run.thresholds, run.epochs, run.samples = state["thresholds"], state["epochs"], state["samples"]
    run.probe_before = state["probe_before"]
    if run.status == "max_epochs" and run.epoch < run.config.max_epochs:
        run.status = None  # extended: go on
    elif run.status is None and run.epoch >= run.config.max_epochs:
        run.status = "max_epochs"  # cut short: finish at the checkpoint, train no further
    if run.procs.main:
        atomic_write_text(run.out / "config.yaml", dump_config(run.config))
    _write_logs(run)


def _initial_scores(config: RunConfig, model, tokenizer, forget, thresholds, procs) -> list[dict]:
    """The forget set before unlearning; a set the model has already forgotten is refused."""
    rows = _score(model, tokenizer, forget, config, procs)
    means = summarize(rows, config.stop.el_n)
    el = means[f"el_{config.stop.el_n}"]
    if el < thresholds["el_max"] and means["ma"] < thresholds["ma_max"]:
        raise UsageError(
            f"the model has already forgotten this forget set (EL_{config.stop.el_n} {el:.4f} < "
            f"{thresholds['el_max']:.4f}, MA {means['ma']:.4f} < {thresholds['ma_max']:.4f}); "
            "nothing to unlearn: check the model and forget set, or lower stop.el_max/ma_max"
        )
    return rows


def _log_epoch_zero(run: _Run, rows: list[dict]) -> None:
    for r in rows:  # the texts once, at epoch 0: the report's before/after table needs them
        sample = run.forget[r["id"]]
        r |= {"epoch": 0, "active": True, "removed": False}
        r |= {"prefix": sample.prefix, "reference": sample.suffix}
    if run.config.redact:
        rows = [redact_row(r) for r in rows]
    run.samples = rows
    run.probe_before = _probe(run)
    _write_logs(run)


def _write_logs(run: _Run) -> None:
    if not run.procs.main:
        return
    atomic_write_jsonl(run.out / "epochs.jsonl", run.epochs)
    atomic_write_jsonl(run.out / "samples.jsonl", run.samples)


def _summary_at(run: _Run, epoch: int) -> dict:
    rows = [r for r in run.samples if r["epoch"] == epoch]
    means = summarize(rows, run.config.stop.el_n) if rows else {}
    if epoch == 0:
        return means | run.probe_before
    row = next((r for r in run.epochs if r["epoch"] == epoch and "diverged" not in r), {})
    return means | {k: row[k] for k in PROBE_KEYS if k in row}


def _write_manifest(run: _Run, finished: bool = False, status: str | None = None) -> dict:
    """The run's record; written by the main process (the others build it and return it)."""
    import accelerate
    import transformers

    from . import __version__

    hashes = [s.content_hash() for s in run.forget.values()]
    manifest = {
        "icu_unlearn": __version__,
        "method": run.config.method,
        "status": status or (run.status if finished else "running"),
        "config": run.config.to_dict(),
        "model": describe_model(run.config.model),
        "forget": {
            "spec": run.config.forget,
            "num_samples": len(hashes),
            "sample_sha256": dict(zip(run.forget, hashes, strict=True)),
            "set_sha256": hashlib.sha256(json.dumps(sorted(hashes)).encode()).hexdigest(),
        },
        "pairs": run.pair_stats,
        "thresholds": run.thresholds,
        "epochs": run.epoch,
        "before": _summary_at(run, 0),
        "after": _summary_at(run, run.epoch) if finished else None,
        "active_at_end": run.active if finished else None,
        # why the run stopped early and which epoch's model it kept
        "diverged": run.epochs[-1] if run.status == "diverged" else None,
        "reference": run.reference_check if finished else None,
        "parameters": run.parameters,
        "processes": _processes(run),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
        },
    }
    if run.procs.main:
        atomic_write_json(run.out / "manifest.json", manifest)
    return manifest


def _processes(run: _Run) -> dict:
    accelerator = run.accelerator
    return {
        "count": run.procs.world,
        "distributed_type": accelerator.distributed_type.value,
        "micro_batch": None
        if run.config.batch_size == "all"
        else _micro_size(run.config.batch_size, run.config.grad_accum, run.procs.world),
    }


def _micro_size(batch: int, grad_accum: int, world: int) -> int:
    """Samples per forward pass: the step's batch over accumulation steps and processes."""
    return -(-batch // (grad_accum * world))


def _parameter_counts(model) -> dict:
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def _reference_check(run: _Run) -> dict | None:
    """Proof that the frozen reference model stayed what it was when the run began."""
    if run.reference is None:
        return None
    if run.procs.lockstep:
        return {"sha256": None, "unchanged": None, "kind": "sharded frozen copy (not digested)"}
    now = weights_digest(run.reference)
    kind = "adapters disabled" if run.config.lora.r > 0 else "frozen copy"
    return {"sha256": now, "unchanged": now == run.reference_sha256, "kind": kind}


def _finish(run: _Run) -> UnlearnResult:
    run.reference_check = _reference_check(run)
    # sharded weights are gathered whole (a collective); replicated ones are whole already
    weights = None if not run.procs.lockstep else run.accelerator.get_state_dict(run.model)
    if run.procs.main:
        target = run.out / "model"
        tmp = temp_dir(run.out, ".model-")
        if run.config.lora.r > 0:
            lora.save(_unwrap(run), tmp, run.config.lora)
        else:
            _unwrap(run).save_pretrained(tmp, state_dict=weights, safe_serialization=True)
        run.tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    manifest = _write_manifest(run, finished=True)
    run.procs.wait()
    return UnlearnResult(run.out, run.status, manifest, run.epochs, run.samples)
