"""Several processes (`accelerate launch ... -m icu_unlearn run`): who trains on what, and
how the processes agree.

Weights are either replicated (one process, DDP, DeepSpeed ZeRO-1/2) or sharded
(DeepSpeed ZeRO-3, FSDP2). With replicated weights each process scores its share of the
sequences and the rows are gathered; with sharded weights every forward pass is a
collective, so every process scores every sequence in lockstep. Either way the main
process decides which samples IUR removes and broadcasts the decision, so every process
holds the same active set, and only the main process writes files.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, broadcast_object_list, gather_object

from .errors import UsageError

AUTO = "auto"  # a DeepSpeed value left to the run


class Processes:
    """The accelerator plus what the loop needs from it: shard, gather, decide, sum."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        self.main = accelerator.is_main_process
        self.lockstep = params_sharded(accelerator)
        # one process or DDP: weights and optimizer state are whole on every process
        self.replicated = accelerator.distributed_type in REPLICATED

    def shard(self, items: list) -> list:
        """This process's training share: every `world`-th item from its rank on."""
        return list(items)[self.rank :: self.world]

    def score_share(self, items: list) -> list:
        """What this process scores: its shard, or everything when forward passes are
        collectives (sharded weights)."""
        return list(items) if self.lockstep else self.shard(items)

    def gather(self, rows: list) -> list:
        """Undo `score_share`: every process gets all rows, in the original order."""
        if self.world == 1 or self.lockstep:
            return rows
        parts = gather_object([rows])
        merged: list = [None] * sum(len(p) for p in parts)
        for rank, part in enumerate(parts):
            merged[rank :: self.world] = part
        return merged

    def everyone(self, value: Any) -> list:
        """`value` from every process, in rank order."""
        return [value] if self.world == 1 else gather_object([value])

    def decide(self, value: Any) -> Any:
        """The main process's `value`, on every process."""
        if self.world == 1:
            return value
        return broadcast_object_list([value], from_process=0)[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes (loss totals, log-likelihoods, flags)."""
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(tensor, reduction="sum").tolist()

    def accumulating(self, model, last: bool):
        """Around a backward pass: DDP skips its all-reduce until the step's last one;
        DeepSpeed is told where the step ends."""
        self.accelerator.gradient_state._set_sync_gradients(last)
        if last or self.world == 1 or not self.replicated:
            return contextlib.nullcontext()
        return model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            # the loss is already weighted for accumulation: no division by DeepSpeed's steps
            self.accelerator.backward(loss, scale_wrt_gas=False)
        else:
            self.accelerator.backward(loss)

    def wait(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()


def micro_size(batch: int, grad_accum: int, world: int) -> int:
    """Samples per forward pass: the step's batch over accumulation steps and processes."""
    return -(-batch // (grad_accum * world))


REPLICATED = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def make_accelerator() -> Accelerator:
    """The accelerator for this launch: GPUs when there are any; on CPU, DeepSpeed over
    gloo when asked for (accelerate picks no backend for it there and would count one
    process), otherwise plain processes (DDP over gloo under `accelerate launch`)."""
    if torch.cuda.is_available():
        return _whole_loads(Accelerator())
    if _asked("ACCELERATE_USE_DEEPSPEED") and importlib.util.find_spec("deepspeed"):
        _no_shm_kernel()
        PartialState(backend="gloo")
        return _whole_loads(Accelerator())
    return Accelerator(cpu=True)


def _no_shm_kernel() -> None:
    """DeepSpeed on CPU compiles a shared-memory all-reduce kernel on its first collective
    (measured here: 60-90 s with both cores busy, and it needs a C++ toolchain; rebuilt
    for every new install path). A CPU run's collectives go through gloo, as DDP's do, so
    DeepSpeed is told the kernel is unavailable and falls back to torch.distributed."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _whole_loads(accelerator: Accelerator) -> Accelerator:
    """Under ZeRO-3 accelerate makes every `from_pretrained` build its model partitioned (a
    collective, and unusable before `prepare`). Models here load whole on every process,
    the scoring encoders included; `prepare` shards the trained model and
    `prepare_original` the frozen original."""
    if params_sharded(accelerator) and accelerator.distributed_type == DistributedType.DEEPSPEED:
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    return accelerator


def _asked(variable: str) -> bool:
    return os.environ.get(variable, "false").lower() in ("1", "true")


def params_sharded(accelerator: Accelerator) -> bool:
    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return True
    if kind == DistributedType.DEEPSPEED:
        return accelerator.state.deepspeed_plugin.zero_stage == 3
    return False


def check_launch(accelerator: Accelerator, batch_size, grad_accum: int) -> None:
    """Refuse launches that would change the run behind its back."""
    asked = [
        name
        for name, var in (
            ("FSDP", "ACCELERATE_USE_FSDP"),
            ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"),
        )
        if _asked(var)
    ]
    kind = accelerator.distributed_type
    if asked and kind not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # accelerate falls back to plain DDP on CPU without a word
        need = "GPUs" if asked[0] == "FSDP" else "GPUs or the deepspeed package"
        raise UsageError(
            f"accelerate was asked for {asked[0]} but runs {kind.value} here (it needs {need}); "
            "launch with configs/accelerate/ddp.yaml instead"
        )
    if kind == DistributedType.FSDP and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise UsageError("FSDP runs need fsdp_version: 2 (see configs/accelerate/fsdp.yaml)")
    steps = accelerator.gradient_accumulation_steps
    if steps not in (1, grad_accum):
        raise UsageError(
            f"the accelerate config sets gradient_accumulation_steps {steps} but the run's "
            f"grad_accum is {grad_accum}; set grad_accum in the run config only"
        )
    if kind == DistributedType.DEEPSPEED:
        _fit_deepspeed_config(
            accelerator.state.deepspeed_plugin.deepspeed_config,
            batch_size,
            grad_accum,
            accelerator.num_processes,
        )


def _fit_deepspeed_config(ds: dict, batch_size, grad_accum: int, world: int) -> None:
    """The run config owns the optimizer, learning rate and batch; DeepSpeed's file may
    leave them to it ("auto" or absent) or repeat them, never set other values."""
    for section in ("optimizer", "scheduler"):
        if section in ds:
            raise UsageError(
                f"the DeepSpeed config has a {section} section; remove it: the run's Adam and "
                "constant learning rate come from the run config (lr)"
            )
    expected: dict = {"gradient_accumulation_steps": grad_accum}
    if batch_size != "all":
        expected["train_batch_size"] = batch_size
        if batch_size % (grad_accum * world) == 0:
            expected["train_micro_batch_size_per_gpu"] = batch_size // (grad_accum * world)
    for key, value in expected.items():
        given = ds.get(key, AUTO)
        neutral = (AUTO, value, 1) if key == "gradient_accumulation_steps" else (AUTO, value)
        if given not in neutral:  # accelerate writes gradient_accumulation_steps 1 by default
            raise UsageError(
                f"the DeepSpeed config sets {key} {given} but the run implies {value} "
                f"(batch_size {batch_size}, grad_accum {grad_accum}, {world} processes); "
                f"set it to auto"
            )
    # The loop does its own micro-batching and accumulation (scaling every loss itself and
    # marking the step boundary), so DeepSpeed's values only have to be consistent.
    ds["train_micro_batch_size_per_gpu"] = 1
    ds["gradient_accumulation_steps"] = 1
    ds["train_batch_size"] = world
    if ds.get("gradient_clipping", AUTO) == AUTO:
        ds["gradient_clipping"] = 0.0  # the single-process run does not clip either


def prepare_original(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The frozen original model, placed the way the trained one is: a plain copy per
    process with replicated weights; sharded like the policy under ZeRO-3 and FSDP2
    (forward passes in lockstep are then collectives, which the loop guarantees)."""
    original = copy.deepcopy(model).eval().requires_grad_(False)
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED and params_sharded(accelerator):
        import deepspeed

        ds = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
        ds.pop("optimizer", None)
        ds.pop("scheduler", None)
        ds["zero_optimization"] = {"stage": 3}
        engine, *_ = deepspeed.initialize(model=original, config=ds)
        return engine.module.eval()
    if kind == DistributedType.FSDP:
        from torch.distributed.fsdp import fully_shard

        blocks = set(getattr(original, "_no_split_modules", None) or [])
        for module in original.modules():
            if type(module).__name__ in blocks:
                fully_shard(module)
        fully_shard(original)
        return original
    return original.to(accelerator.device)
