"""Fault points for the kill-and-resume tests: `ICU_UNLEARN_FAULT=name:epoch` makes the
process SIGKILL itself when it reaches that point of that epoch (`name:epoch:sigint`:
SIGINT, as Ctrl-C would). Unset, they cost nothing.

Points: `train_step` (after the first optimizer step of the epoch), `iur_check` (after
the forget set was scored, before IUR decides), `checkpoint_write` (weights written,
checkpoint not yet published).
"""

from __future__ import annotations

import os
import signal

_FAULT = os.environ.get("ICU_UNLEARN_FAULT")


def point(name: str, epoch: int) -> None:
    if _FAULT == f"{name}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)
    elif _FAULT == f"{name}:{epoch}:sigint":  # Ctrl-C at a known point, not a race
        os.kill(os.getpid(), signal.SIGINT)
