"""A run's set-up: every input checked and loaded, the model prepared, before the first epoch.

`RunSetup` is what the run is given or builds, fixed from then on; `RunProgress` is
what changes from epoch to epoch (its fields are the checkpoint's run state).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from . import checkpoint, criteria, distributed, lora, run_dir
from .config import RunConfig, dump_config
from .data import training_data
from .data.forget import ForgetSample, load_forget_set
from .errors import UsageError
from .evaluate import EvalSettings, score_samples
from .io import atomic_write_jsonl, atomic_write_text
from .methods import runnable
from .models import load_model_and_tokenizer, weights_digest
from .privacy import redact_row, redact_text


@dataclass(frozen=True)
class RunSetup:
    """Everything the run is given or builds before its first epoch; fixed from then on."""

    config: RunConfig
    out: Path
    model: torch.nn.Module  # prepared by accelerate
    tokenizer: object
    reference: torch.nn.Module | None  # the frozen original model, when the method uses one
    forget: dict[str, ForgetSample]
    data: training_data.TrainingData
    optimizer: torch.optim.Optimizer
    accelerator: Accelerator
    procs: distributed.Processes
    thresholds: dict
    probes: dict[str, list[ForgetSample]]  # "retain" / "heldout" sequences watched each epoch
    scoring: EvalSettings  # one for every score the run takes
    # stop.reference's EL, MA and suffix NLL per sequence (None without one)
    reference_scores: dict | None
    parameters: dict  # total and trainable (LoRA: adapters)
    reference_sha256: str | None  # the frozen model's weights when the run began

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)


@dataclass
class RunProgress:
    """What changes from epoch to epoch; `asdict` of it is the checkpoint's run state."""

    epoch: int = 0
    active: list[str] = field(default_factory=list)
    status: str | None = None
    epochs: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    probe_before: dict = field(default_factory=dict)


def set_up(config: RunConfig, resume: bool, overwrite: bool, progress: bool):
    """Check every input, then build the run: nothing is written before the inputs pass."""
    config.require()
    if not config.out:
        raise UsageError("the run has no output directory; give --out DIR or set out in the config")
    out = Path(config.out).expanduser()
    run_dir.check_out(out, config, resume, overwrite)
    # Several processes under `accelerate launch`; one otherwise.
    accelerator = distributed.make_accelerator()
    procs = distributed.Processes(accelerator)
    distributed.check_launch(accelerator, config.batch_size, config.grad_accum)
    if config.lora.r > 0 and procs.lockstep:
        raise UsageError("LoRA runs need replicated weights: launch with DDP or DeepSpeed ZeRO-2")
    torch.manual_seed(config.seed)
    with accelerator.main_process_first():  # a model cache (GGUF -> safetensors) is built once
        model, tokenizer = load_model_and_tokenizer(config.model, config.trust_remote_code)
    vocab = model.get_input_embeddings().num_embeddings
    forget = load_forget_set(
        config.forget, tokenizer, config.prefix_length, config.data_dir, vocab_size=vocab
    )
    scoring = EvalSettings(
        **asdict(config.eval), el_n=config.stop.el_n, el_window=config.stop.el_window
    )
    latest = checkpoint.latest(out / "checkpoints") if resume else None
    if latest is not None:  # measured when the run began
        saved = checkpoint.read_state(latest)
        limits, reference_scores = saved["thresholds"], saved["reference_scores"]
    else:
        limits = criteria.thresholds(config, model, tokenizer, forget, scoring, procs)
        reference_scores = criteria.reference_rows(config, tokenizer, forget, scoring, procs)
    probes = criteria.load_probes(config, tokenizer, forget, vocab)
    _check_audit(config, tokenizer, forget, vocab)
    # Before the pool is embedded (minutes, with a progress bar): a forget set that cannot
    # be scored, or is already forgotten, fails fast on one line.
    initial = None
    if latest is None:
        initial = _initial_rows(config, model, tokenizer, forget, scoring, procs, limits,
                                reference_scores)  # fmt: skip
    method = runnable(config.method)
    with accelerator.main_process_first():  # the pool's embeddings are cached once
        data = training_data.build(
            config, method.needs(config), forget, tokenizer, progress and procs.main
        )
    # Every input is checked by now: only from here on does the run write anything.
    _start_directory(out, config, data, procs, fresh=overwrite and not resume)
    model, reference, optimizer = _prepare_training(config, model, accelerator, procs)
    setup = RunSetup(
        config, out, model, tokenizer, reference, {s.id: s for s in forget}, data, optimizer,
        accelerator, procs, limits, probes, scoring, reference_scores,
        parameters=_parameter_counts(accelerator.unwrap_model(model)),
        # sharded: no process holds it whole
        reference_sha256=None if reference is None or procs.lockstep else weights_digest(reference),
    )  # fmt: skip
    run = RunProgress(active=[s.id for s in forget])
    if initial is not None and config.stop.scope == "each" and config.method != "memorize":
        run.active = [r["id"] for r in initial if r["done"] is None]
    if latest is not None:
        run_dir.restore(setup, run, latest)
    else:
        if procs.main:
            atomic_write_text(out / "config.yaml", dump_config(config))
        _log_epoch_zero(setup, run, initial)
        run_dir.write_manifest(setup, run)
        # epoch 0 = the input model: what divergence in the first epoch returns to
        run_dir.save_checkpoint(setup, run)
    return setup, run


def _check_audit(config: RunConfig, tokenizer, forget, vocab) -> None:
    """The end-of-run audit's inputs, checked before training: it runs after the model
    is published, when a bad holdout or attack could no longer fail fast."""
    if not config.audit.enabled:
        return
    from .audit.attacks import require_bitsandbytes
    from .audit.settings import parse_attack

    if any(parse_attack(attack)[0] == "bnb" for attack in config.audit.attacks):
        require_bitsandbytes()
    if config.audit.holdout:
        holdout = load_forget_set(
            config.audit.holdout, tokenizer, config.prefix_length, config.data_dir, vocab
        )
        criteria.refuse_overlap(holdout, forget, "audit.holdout shares samples with the forget set")


def _initial_rows(config, model, tokenizer, forget, scoring, procs, limits, reference_scores):
    """The forget set before unlearning; a set the model has already forgotten is refused."""
    if config.method == "memorize":  # planting stops on MA: nothing else to score
        return score_samples(
            model, tokenizer, forget, scoring, procs=procs, similarity=False, el=False
        )
    rows = score_samples(model, tokenizer, forget, scoring, procs=procs, suffix_nll=True)
    criteria.mark_done(config, rows, limits, reference_scores)
    criteria.refuse_already_forgotten(config, rows, limits)
    return rows


def _start_directory(out: Path, config: RunConfig, data, procs, fresh: bool) -> None:
    if procs.main:
        if fresh:
            run_dir.clear(out)
        out.mkdir(parents=True, exist_ok=True)
        rows = data.pair_rows
        if rows is not None:
            if config.redact:  # analogous texts share phrases with the forgotten ones by design
                rows = [r | {"learn_text": redact_text(r["learn_text"])} for r in rows]
            atomic_write_jsonl(out / "pairs.jsonl", rows)
    procs.wait()


def _prepare_training(config: RunConfig, model, accelerator, procs):
    """The trained model (LoRA adapters when asked), the frozen reference and the optimizer."""
    reference = None
    needs_ref = runnable(config.method).uses_reference(config)
    if config.lora.r > 0:
        model = lora.add_adapters(model, config.lora)
        if needs_ref:  # the base model is the adapted one with adapters off: no second copy
            reference = lora.AdaptersOff(model)
    elif needs_ref:  # the frozen original model, computing P_theta0 on the fly
        reference = distributed.prepare_reference(accelerator, model)
    if config.activation_checkpointing:  # after the reference copy: it runs without grad
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UsageError(
                f"{type(model).__name__} does not support activation checkpointing; "
                "set activation_checkpointing: false"
            )
        model.activation_checkpointing_enable({"use_reentrant": False})
    # foreach=False: the multi-tensor step allocates a temporary per parameter group,
    # a transient copy of the model's size on top of weights, gradients and moments.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        trainable, lr=config.lr, betas=tuple(config.adam_betas), foreach=False
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, reference, optimizer


def _parameter_counts(model) -> dict:
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def _log_epoch_zero(setup: RunSetup, run: RunProgress, rows: list[dict]) -> None:
    for r in rows:  # the texts once, at epoch 0: the report's before/after table needs them
        sample = setup.forget[r["id"]]
        r |= {"epoch": 0, "active": True, "removed": False}
        r |= {"prefix": sample.prefix, "reference": sample.suffix}
    run.samples = [redact_row(r) for r in rows] if setup.config.redact else rows
    run.probe_before = criteria.measure_probes(
        setup.unwrapped, setup.tokenizer, setup.probes, setup.scoring, setup.procs
    )
    run_dir.write_logs(setup, run)
