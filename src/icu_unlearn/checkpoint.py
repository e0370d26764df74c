"""Epoch checkpoints: written whole into a fresh folder, then published by an atomic pointer.

A checkpoint is `checkpoints/epoch-N/` (weights, optimizer, RNG, run state) and
`checkpoints/LATEST` names the newest complete one. A write killed half-way
leaves only a `.tmp-*` folder that nothing points at.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from . import faults
from .errors import UsageError
from .io import atomic_write_text, temp_dir


def save(root: Path, epoch: int, model, optimizer, state: dict, procs) -> Path:
    """Every process calls this; the main one writes. `model` is the prepared model."""
    rng = procs.everyone(torch.get_rng_state())  # each process's own, restored to it
    final = root / f"epoch-{epoch}"
    tmp = None
    if procs.main:
        root.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(root, f".tmp-epoch-{epoch}-")
    tmp = procs.decide(tmp)
    if procs.replicated:
        if procs.main:
            save_model(procs.accelerator.unwrap_model(model), str(tmp / "model.safetensors"))
            faults.point("checkpoint_write", epoch)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    else:  # sharded weights or optimizer state (DeepSpeed, FSDP): each process its part
        procs.accelerator.save_state(str(tmp / "sharded"))
        faults.point("checkpoint_write", epoch)
    if procs.main:
        torch.save({"torch": rng}, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state))
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(root / "LATEST", final.name + "\n")
        for old in root.iterdir():  # keep the newest only; partial writes of killed runs go too
            if old.name not in (final.name, "LATEST"):
                shutil.rmtree(old, ignore_errors=True)
    procs.wait()  # nobody reads the checkpoint (divergence, resume) before it is whole
    return final


def latest(root: Path) -> Path | None:
    pointer = root / "LATEST"
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").exists():
        raise UsageError(f"checkpoint {path} is incomplete; delete {root} and start the run again")
    return path


def load(path: Path, model, optimizer, procs) -> dict:
    if procs.replicated:
        load_model(procs.accelerator.unwrap_model(model), str(path / "model.safetensors"))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    else:
        procs.accelerator.load_state(str(path / "sharded"))
    states = torch.load(path / "rng.pt", weights_only=True)["torch"]
    if isinstance(states, torch.Tensor):  # a checkpoint written by one process
        states = [states]
    if procs.rank < len(states):  # resumed on more processes: the new ones keep their seed
        torch.set_rng_state(states[procs.rank])
    return read_state(path)


def read_state(path: Path) -> dict:
    """The run state saved with the checkpoint (no weights)."""
    return json.loads((path / "state.json").read_text())
