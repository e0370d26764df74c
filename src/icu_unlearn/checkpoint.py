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


def save(root: Path, epoch: int, model, optimizer, state: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(root, f".tmp-epoch-{epoch}-")
    save_model(model, str(tmp / "model.safetensors"))
    faults.point("checkpoint_write", epoch)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    final = root / f"epoch-{epoch}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(root / "LATEST", final.name + "\n")
    for old in root.iterdir():  # keep the newest only; partial writes of killed runs go too
        if old.name not in (final.name, "LATEST"):
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> Path | None:
    pointer = root / "LATEST"
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").exists():
        raise UsageError(f"checkpoint {path} is incomplete; delete {root} and start the run again")
    return path


def load(path: Path, model, optimizer) -> dict:
    load_model(model, str(path / "model.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    torch.set_rng_state(torch.load(path / "rng.pt", weights_only=True)["torch"])
    return json.loads((path / "state.json").read_text())


def load_weights(path: Path, model) -> None:
    load_model(model, str(path / "model.safetensors"))
