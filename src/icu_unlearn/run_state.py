"""A run's state: `RunSetup`, what the run is given or builds before its first epoch
(fixed from then on), and `RunProgress`, what changes from epoch to epoch (its fields
are the checkpoint's run state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from . import distributed
from .config import RunConfig
from .data import training_data
from .data.forget import ForgetSample
from .evaluate import EvalSettings
from .rules import StoppingRule


@dataclass(frozen=True)
class RunSetup:
    """Everything the run is given or builds before its first epoch; fixed from then on."""

    config: RunConfig
    out: Path
    model: torch.nn.Module  # prepared by accelerate
    tokenizer: object
    original: torch.nn.Module | None  # the frozen original model (theta0), when the method uses one
    forget: dict[str, ForgetSample]
    data: training_data.TrainingData
    optimizer: torch.optim.Optimizer
    accelerator: Accelerator
    procs: distributed.Processes
    thresholds: dict
    rule: StoppingRule  # stop.scope's rule (planting's for memorize), chosen once
    probes: dict[str, list[ForgetSample]]  # "retain" / "heldout" sequences watched each epoch
    scoring: EvalSettings  # one for every score the run takes
    # the reference model's (stop.reference) EL, MA and suffix NLL per sequence (None without one)
    reference_scores: dict | None
    forget_target: str  # config.forget_target with auto decided
    # forget_target: reference: each forget sequence's reference next-token log-probabilities
    # over its suffix positions, (suffix length, V) (criteria.reference_targets); else None
    reference_targets: dict | None
    # probe.retain with probe.retain_weight > 0: each kept record's next-token
    # log-probabilities under the input model, (T - 1, V), which the retain term holds
    retain_targets: dict | None
    parameters: dict  # total and trainable (LoRA: adapters)
    original_sha256: str | None  # the original model's weights when the run began

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def drafts(self, run: RunProgress) -> dict | None:
        """The continuations a scoring verifies and updates (`run.drafts`), or None where
        `eval.verify` is off (every continuation decoded afresh)."""
        return run.drafts if self.config.eval.verify else None


@dataclass
class RunProgress:
    """What changes from epoch to epoch; `asdict` of it is the checkpoint's run state."""

    epoch: int = 0
    active: list[str] = field(default_factory=list)
    status: str | None = None
    epochs: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    probe_before: dict = field(default_factory=dict)
    # the records the forget term pushes past never-seen text's level this epoch: at that
    # level and still extractable (`StoppingRule.pushed`)
    pushed: list[str] = field(default_factory=list)
    # {id: {q: greedy continuation of x[:q]}}: the last scoring's of the forget and the
    # kept (`probe.retain`) records, which the next one verifies instead of decoding
    # (`scoring.greedy_continuations`); in the checkpoint, so that a resumed run verifies
    # the same drafts
    drafts: dict[str, dict[int, list[int]]] = field(default_factory=dict)
