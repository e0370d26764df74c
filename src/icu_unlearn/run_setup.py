"""A run's set-up: every input checked and loaded, the model prepared, before the first
epoch; the result is a `RunSetup` and a `RunProgress` (run_state.py)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from . import checkpoint, criteria, distributed, lora, run_dir
from .config import RunConfig, dump_config
from .data import training_data
from .data.forget import load_forget_set
from .errors import UsageError
from .evaluate import EvalSettings
from .forget_scoring import score_forget_set
from .io import atomic_write_jsonl, atomic_write_text
from .methods import runnable
from .models import load_model_and_tokenizer, weights_digest
from .privacy import redact_row, redact_text
from .rules import StoppingRule, rule_for
from .run_state import RunProgress, RunSetup


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
    if config.relearn_step and not procs.replicated:
        raise UsageError("relearn_step needs the weights' gradients in place: one process or DDP")
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
        **{k: v for k, v in asdict(config.eval).items() if k != "verify"},
        el_n=config.stop.el_n,
        el_window=config.stop.el_window,
        precision=config.precision,
    )
    latest = checkpoint.latest(out / "checkpoints") if resume else None
    target = config.resolved_forget_target()
    reference = None  # the reference model, loaded for what is measured of it at set-up
    if config.stop.reference is not None and (latest is None or target == "reference"):
        reference = criteria.load_reference(config, tokenizer)
    if latest is not None:  # measured when the run began
        saved = checkpoint.read_state(latest)
        limits, reference_scores = saved["thresholds"], saved["reference_scores"]
    else:
        limits = criteria.thresholds(config, model, tokenizer, forget, scoring, procs)
        if config.audit.holdout:  # the calibrated level and the `stands_out` baseline
            limits["holdout_nll"] = criteria.holdout_level(
                config, model, tokenizer, forget, scoring, procs
            )
        reference_scores, reference_generations = None, {}
        if reference is not None:
            reference_scores = criteria.reference_rows(
                config, reference, tokenizer, forget, scoring, procs
            )
            reference_generations = {i: s.pop("generation") for i, s in reference_scores.items()}
    targets = criteria.reference_targets(reference, forget) if target == "reference" else None
    del reference  # freed: what the run needs of it is measured
    rule = rule_for(config, limits, reference_scores)
    probes = criteria.load_probes(config, tokenizer, forget, vocab)
    _check_audit(config, tokenizer, forget, vocab)
    # Before the pool is embedded (minutes, with a progress bar): a forget set that cannot
    # be scored, or is already forgotten, fails fast on one line.
    initial, drafts = None, {}
    if latest is None:
        initial = _initial_rows(
            rule, model, tokenizer, forget, scoring, procs, drafts if config.eval.verify else None
        )
    retain_targets = None
    if "retain" in probes and config.probe.retain_weight > 0 and rule.scores_el:
        # from the input model, before any step (on resume too: it is what config.model holds)
        retain_targets = criteria.reference_targets(model, probes["retain"])
    method = runnable(config.method)
    with accelerator.main_process_first():  # the pool's embeddings are cached once
        data = training_data.build(
            config, method.needs(config), forget, tokenizer, progress and procs.main
        )
    # Every input is checked by now: only from here on does the run write anything.
    _start_directory(out, config, data, procs, fresh=overwrite and not resume)
    model, original, optimizer = _prepare_training(config, model, accelerator, procs)
    setup = RunSetup(
        config=config,
        out=out,
        model=model,
        tokenizer=tokenizer,
        original=original,
        forget={s.id: s for s in forget},
        data=data,
        optimizer=optimizer,
        accelerator=accelerator,
        procs=procs,
        thresholds=limits,
        rule=rule,
        probes=probes,
        scoring=scoring,
        reference_scores=reference_scores,
        forget_target=target,
        reference_targets=targets,
        retain_targets=retain_targets,
        parameters=_parameter_counts(accelerator.unwrap_model(model)),
        # sharded: no process holds it whole
        original_sha256=None if original is None or procs.lockstep else weights_digest(original),
    )
    run = RunProgress(active=[s.id for s in forget], drafts=drafts)
    if initial is not None:
        run.active = rule.initial_active(initial[1])
    if latest is not None:
        run_dir.restore(setup, run, latest)
    else:
        if procs.main:
            atomic_write_text(out / "config.yaml", dump_config(config))
        _log_epoch_zero(setup, run, initial, reference_generations)
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
    from .audit_settings import parse_attack

    if any(parse_attack(attack)[0] == "bnb" for attack in config.audit.attacks):
        require_bitsandbytes()
    if config.audit.holdout:
        holdout = load_forget_set(
            config.audit.holdout, tokenizer, config.prefix_length, config.data_dir, vocab
        )
        criteria.refuse_overlap(holdout, forget, "audit.holdout shares samples with the forget set")


def _initial_rows(rule: StoppingRule, model, tokenizer, forget, scoring, procs, drafts):
    """The forget set before unlearning, scored whole and decided (rows and states); a set
    the model has already forgotten is refused. `drafts` receives its continuations."""
    rows, states = score_forget_set(rule, model, tokenizer, forget, scoring, procs, drafts=drafts)
    rule.refuse_already_forgotten(states)
    return rows, states


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
    """The trained model (LoRA adapters when asked), the frozen original and the optimizer."""
    original = None
    needs_original = runnable(config.method).uses_original(config)
    if config.lora.r > 0:
        model = lora.add_adapters(model, config.lora)
        if needs_original:  # the base model is the adapted one with adapters off: no copy
            original = lora.AdaptersOff(model)
    elif needs_original:  # the frozen original model, computing P_theta0 on the fly
        original = distributed.prepare_original(accelerator, model)
    if config.activation_checkpointing:  # after the original's copy: it runs without grad
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
    return model, original, optimizer


def _parameter_counts(model) -> dict:
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def _log_epoch_zero(setup: RunSetup, run: RunProgress, initial, reference_generations) -> None:
    rows, _ = initial
    for r in rows:  # the texts once, at epoch 0: the report's before/after table needs them
        sample = setup.forget[r["id"]]
        r |= {"epoch": 0, "active": True, "removed": False}
        r |= {"prefix": sample.prefix, "true_suffix": sample.suffix}
        if r["id"] in reference_generations:  # what the never-trained model writes
            r["reference_generation"] = reference_generations[r["id"]]
    run.samples = [redact_row(r) for r in rows] if setup.config.redact else rows
    run.probe_before = criteria.measure_probes(
        setup.unwrapped, setup.tokenizer, setup.probes, setup.scoring, setup.procs,
        setup.drafts(run),
    )  # fmt: skip
    run_dir.write_logs(setup, run)
