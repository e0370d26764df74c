"""The reference model's measurements, cached by content and reused.

A reference model does not change across the audits of one study (the run's
end-of-run audit, `icu-unlearn audit` after it, the demo's audits before and after
unlearning), and measuring it costs as much as measuring the model. Its rows
(`measure_forget`, `measure_holdout`) are kept as JSON in
`cache_dir()/audit-reference/` (`ICU_CACHE_DIR` moves the whole cache; deleting the
folder empties it), one file per sequence set, named by the sha256 of everything
that decides them:

* the reference's weights: the sha256 of its folder's config.json and *.safetensors
  files (0.8 s for SmolLM2-135M's 540 MB on this machine, and the model is not
  loaded on a hit), or `models.weights_digest` of the loaded model (1.2 s after a
  0.5 s load) for a model passed loaded or by hub id;
* the tokenizer (its vocabulary and special tokens: what the ids mean, how
  generations decode) and the model's vocabulary size (the reference must match it);
* each sequence's token ids, prefix length and suffix text (zlib's ratio reads the
  text), in order: the rows are per set, and batching is part of the numbers;
* the attack, for the reference's measurements after one (the robustness attacks are
  applied to the reference too): its spec, its settings, and for relearn the hashes of
  the sequences relearned;
* the settings that reach a measurement: every AuditSettings field but the verdict
  thresholds and the robustness attacks' own settings (NOT_MEASURED), the sampling
  and beam attacks' sizes, and redact (a redacted audit's entries hold the generated
  texts as hashes, as its audit.json does; an unredacted one's hold the texts);
* the code that measures: the package's source files, torch's and transformers'
  versions; an edit anywhere in the package starts a fresh entry.

Entries are written atomically: a crash or a second audit writing the same entry
leaves a whole file or none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import cache
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedTokenizerBase

from ..data.forget import ForgetSample
from ..io import atomic_write_json
from ..models import resolve_model_path
from ..paths import cache_dir
from .measure import Context

FORMAT = 1  # of the entry files; a change of layout starts fresh entries

# AuditSettings fields that decide verdicts or shape the robustness attacks, never a
# measurement of the unattacked reference: a change of them still finds the entry.
NOT_MEASURED = (
    "el_max",
    "leak_chance",
    "stands_out_margin",
    "quantize_group_size",
    "relearn_lr",
    "relearn_batch_size",
)


def folder() -> Path:
    return cache_dir() / "audit-reference"


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def folder_weights_key(spec: str) -> str | None:
    """The content key of a model given as a folder (or packaged alias): its config.json
    and safetensors files; None for a hub id, whose weights only loading shows."""
    path = Path(resolve_model_path(spec))
    if not path.is_dir():
        return None
    return "files:" + _sha256_files([path / "config.json", *sorted(path.glob("*.safetensors"))])


@cache
def _code_digest() -> str:
    root = Path(__file__).resolve().parents[1]  # the icu_unlearn package
    sources = sorted(root.rglob("*.py"))
    digest = hashlib.sha256()
    for path in sources:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    data = json.dumps([vocab, sorted(tokenizer.all_special_ids)]).encode()
    return hashlib.sha256(data).hexdigest()


def entry_key(
    weights: str,
    kind: str,
    samples: list[ForgetSample],
    ctx: Context,
    vocab_size: int,
    attack: dict | None = None,
) -> str:
    """The sha256 naming one entry: `kind` ("forget" or "holdout") measured by the
    reference with content key `weights` (see the module docstring), as it is or after
    the attack `attack` describes (its spec and every setting that shapes it)."""
    measured = {k: v for k, v in asdict(ctx.settings).items() if k not in NOT_MEASURED}
    parts = {
        "format": FORMAT,
        "code": _code_digest(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "weights": weights,
        "kind": kind,
        "tokenizer": _tokenizer_digest(ctx.tokenizer),
        "vocab_size": vocab_size,
        "sequences": [[s.content_hash(), s.prefix_length, s.suffix] for s in samples],
        "settings": measured,
        "num_samples": ctx.num_samples,
        "num_beams": ctx.num_beams,
        "redact": ctx.redact,  # a redacted audit's entries hold hashes, never the texts
        "attack": attack,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def load(key: str) -> list[dict] | None:
    """The rows stored under `key`, or None."""
    path = folder() / f"{key}.json"
    if not path.is_file():
        return None
    entry = json.loads(path.read_text())
    return entry["rows"]


def store(key: str, rows: list[dict]) -> None:
    atomic_write_json(folder() / f"{key}.json", {"format": FORMAT, "rows": rows})
