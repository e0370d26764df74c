"""A run directory: what may be written where, the logs, the manifest, and publishing a model.

Layout: `model/` (published whole at the end), `manifest.json`, `epochs.jsonl`,
`samples.jsonl`, `pairs.jsonl`, `config.yaml`, `checkpoints/`. Only the main process
writes; every file appears whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from . import checkpoint
from ._version import __version__
from .config import RunConfig, dump_config
from .criteria import PROBE_KEYS
from .distributed import micro_size
from .errors import UsageError
from .evaluate import summarize
from .io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from .metrics.memorization import el_range
from .models import describe_model
from .rules import Decision, SequenceState
from .run_state import RunProgress, RunSetup

RUN_FILES = (
    "manifest.json", "epochs.jsonl", "samples.jsonl", "pairs.jsonl", "config.yaml", "audit.json",
    "memorize.json",
)  # fmt: skip


def check_out(out: Path, config: RunConfig, resume: bool, overwrite: bool) -> None:
    """Refuse an output directory the run must not write to, before anything is written."""
    model_path = Path(config.model).expanduser()
    if model_path.exists() and (
        out.resolve() == model_path.resolve() or model_path.resolve() in out.resolve().parents
    ):
        raise UsageError(f"--out {out} is inside the input model folder; choose another directory")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    if resume:
        if not (out / "checkpoints" / "LATEST").exists():
            raise UsageError(_nothing_to_resume(out))
        if not started_with(out, config):
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


def ended(out: Path, config: RunConfig) -> dict | None:
    """The manifest of a run in `out` that has ended, or None (no run, or one killed or
    interrupted); refused when that run was made with another config than `config`
    (max_epochs aside, as for resuming, and keys added to the config since it ran)."""
    recorded = ended_manifest(out)
    if recorded is None:
        return None
    if not started_with(out, config, added_since_ok=True):
        raise UsageError(
            f"{out} holds a run that ended with another config; give another out, or remove it"
        )
    return recorded


def ended_manifest(out: Path) -> dict | None:
    """The manifest in `out` of a run that ended; None without one, or while its run is
    killed or interrupted (the manifest's status then says "running" / "interrupted")."""
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return None
    recorded = json.loads(manifest.read_text())
    return None if recorded.get("status") in ("running", "interrupted") else recorded


def started_with(out: Path, config: RunConfig, added_since_ok: bool = False) -> bool:
    """The run in `out` was started with `config`, max_epochs aside (or recorded none).

    `added_since_ok`: keys its config.yaml lacks, added to the config after that run was
    made, are not compared. For reading an ended run's results only: resuming under a key
    the run never knew could change its course, so a resume compares every key."""
    saved = (out / "config.yaml").read_text() if (out / "config.yaml").exists() else ""
    if not saved:
        return True
    recorded, asked = _resumable(yaml.safe_load(saved)), _resumable(config.to_dict())
    return recorded == (_known_to(recorded, asked) if added_since_ok else asked)


def _known_to(recorded: dict, asked: dict) -> dict:
    """`asked` without the keys (at any depth) that `recorded` lacks."""
    return {
        k: _known_to(recorded[k], v) if isinstance(v, dict) and isinstance(recorded[k], dict) else v
        for k, v in asked.items()
        if k in recorded
    }


def _resumable(config: dict) -> dict:
    """What must match to resume: everything but max_epochs (a run may be extended)."""
    return {k: v for k, v in config.items() if k != "max_epochs"}


def clear(out: Path, extra: tuple[str, ...] = ()) -> None:
    """Remove an earlier run's files (--overwrite); anything else in `out` stays."""
    for name in (*RUN_FILES, *extra, "model", "checkpoints"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def forget_record(config: RunConfig, forget: dict) -> dict:
    """The forget set as the manifest records it: content hashes, never the text."""
    hashes = [s.content_hash() for s in forget.values()]
    return {
        "spec": config.forget,
        "num_samples": len(hashes),
        "sample_sha256": dict(zip(forget, hashes, strict=True)),
        "set_sha256": hashlib.sha256(json.dumps(sorted(hashes)).encode()).hexdigest(),
    }


def _record(config: RunConfig, forget: dict, **fields) -> dict:
    """The run's record: what ran on what, with which software, and `fields` (status,
    thresholds, metrics before and after, ...) in the order given."""
    import accelerate
    import transformers

    head = {"icu_unlearn": __version__, "method": config.method}
    return (
        head
        | {"status": fields.pop("status")}
        | {
            "config": config.to_dict(),
            "model": describe_model(config.model),
            "forget": forget_record(config, forget),
        }
        | fields
        | {
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "accelerate": accelerate.__version__,
            },
        }
    )


# ---------------------------------------------------------------- a run's state and record


def save_checkpoint(setup: RunSetup, run: RunProgress) -> None:
    state = asdict(run) | {
        "thresholds": setup.thresholds,
        "reference_scores": setup.reference_scores,
    }
    if setup.config.redact:  # continuations write the forgotten text out until it is gone
        state["drafts"] = {}
    root = setup.out / "checkpoints"
    checkpoint.save(root, run.epoch, setup.model, setup.optimizer, state, setup.procs)


def restore(setup: RunSetup, run: RunProgress, path: Path) -> None:
    state = checkpoint.load(path, setup.model, setup.optimizer, setup.procs)
    for name in asdict(run):  # a field newer than the checkpoint keeps its default
        setattr(run, name, state.get(name, getattr(run, name)))
    # JSON made the prefix lengths strings
    run.drafts = {i: {int(q): c for q, c in d.items()} for i, d in run.drafts.items()}
    if run.status == "incomplete" and run.epoch < setup.config.max_epochs:
        run.status = None  # extended: go on
    elif run.status is None and run.epoch >= setup.config.max_epochs:
        run.status = "incomplete"  # cut short: finish at the checkpoint, train no further
    if setup.procs.main:
        atomic_write_text(setup.out / "config.yaml", dump_config(setup.config))
    write_logs(setup, run)


def write_logs(setup: RunSetup, run: RunProgress) -> None:
    if setup.procs.main:
        atomic_write_jsonl(setup.out / "epochs.jsonl", run.epochs)
        atomic_write_jsonl(setup.out / "samples.jsonl", run.samples)


def _summary_at(setup: RunSetup, run: RunProgress, epoch: int) -> dict:
    rows = [r for r in run.samples if r["epoch"] == epoch]
    means = summarize(rows, setup.config.stop.el_n) if rows else {}
    if epoch == 0:
        return means | {k: v for k, v in run.probe_before.items() if k in PROBE_KEYS}
    row = next((r for r in run.epochs if r["epoch"] == epoch and "diverged" not in r), {})
    return means | {k: row[k] for k in PROBE_KEYS if k in row}


def write_manifest(
    setup: RunSetup,
    run: RunProgress,
    finished: bool = False,
    status: str | None = None,
    original: dict | None = None,
    audit: dict | None = None,
) -> dict:
    """The run's record; written by the main process (the others build it and return it)."""
    record = _record(
        setup.config,
        setup.forget,
        status=status or (run.status if finished else "running"),
        pairs=setup.data.pair_stats,
        # the prefix lengths every EL of the run (thresholds, before, after) averages over
        el_range=el_range(setup.config.stop.el_window),
        thresholds=setup.thresholds,
        epochs=run.epoch,
        before=_summary_at(setup, run, 0),
        after=_summary_at(setup, run, run.epoch) if finished else None,
        active_at_end=run.active if finished else None,
        # why the run stopped early and which epoch's model it kept
        diverged=run.epochs[-1] if run.status in ("diverged", "retain_damaged") else None,
        # each probe.retain record's EL and MA before and after, and those damaged
        retained=_retained(setup, run) if finished and "retain" in run.probe_before else None,
        original=original,  # the frozen original model's weights unchanged
        reference_scores=setup.reference_scores,
        **(_end_state(setup, run) if finished else {}),
        audit=audit,
        parameters=setup.parameters,
        processes=_processes(setup),
    )
    if setup.procs.main:
        atomic_write_json(setup.out / "manifest.json", record)
    return record


def _retained(setup: RunSetup, run: RunProgress) -> dict:
    """Per retained record: EL and MA before the run and of the kept model; `damaged`:
    the ids (with their EL and MA then) that lost more than probe.retain_max_ma_drop."""
    kept = next((r for r in run.epochs if r["epoch"] == run.epoch and "diverged" not in r), {})
    after = kept.get("retain", run.probe_before["retain"])  # epoch 0: the input model kept
    damaged = run.epochs[-1].get("retain_damaged", {}) if run.epochs else {}
    return {
        "max_ma_drop": setup.config.probe.retain_max_ma_drop,
        "per_record": {
            i: {"before": was, "after": after[i]} for i, was in run.probe_before["retain"].items()
        },
        "damaged": damaged,
    }


def _end_state(setup: RunSetup, run: RunProgress) -> dict:
    """Per sequence at the end: which are still extractable (with the reference's levels),
    and how far each suffix's likelihood ended from the never-trained reference's."""
    if not setup.rule.scores_el:
        return {}
    rows = [r for r in run.samples if r["epoch"] == run.epoch]
    el_key = f"el_{setup.config.stop.el_n}"
    states = [
        SequenceState.from_row(r, el_key).decided(Decision(r["done"], stands_out=r["stands_out"]))
        for r in rows
    ]
    end = {"still_extractable": setup.rule.not_done(states)}
    if setup.reference_scores:
        gaps = {
            r["id"]: {
                "suffix_nll": r["suffix_nll"],
                "reference_suffix_nll": setup.reference_scores[r["id"]]["suffix_nll"],
                "gap": r["suffix_nll"] - setup.reference_scores[r["id"]]["suffix_nll"],
            }
            for r in rows
        }
        mean_gap = sum(g["gap"] for g in gaps.values()) / len(gaps)
        end["likelihood_vs_reference"] = {"per_sequence": gaps, "mean_gap": mean_gap}
    return end


def _processes(setup: RunSetup) -> dict:
    config = setup.config
    return {
        "count": setup.procs.world,
        "distributed_type": setup.accelerator.distributed_type.value,
        "micro_batch": None
        if config.batch_size == "all"
        else micro_size(config.batch_size, config.grad_accum, setup.procs.world),
    }


def remove_checkpoints(out: Path) -> None:
    """A finished run's checkpoints/ go (the newest epoch's weights and Adam's moments:
    three times the model's size); a run that keeps them can be extended with --resume."""
    if (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")


def _nothing_to_resume(out: Path) -> str:
    if ended_manifest(out) is not None:
        return (
            f"nothing to resume in {out}: the run finished and its checkpoints were removed; "
            "to extend a run later, start it with --keep-checkpoints"
        )
    return f"nothing to resume in {out}: it has no checkpoint; run without --resume"
