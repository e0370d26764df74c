"""`audit()`: evidence of forgetting beyond greedy decoding, per sequence (DESIGN.md §3)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..audit_settings import DECODING_ATTACKS, AuditSettings, parse_attack
from ..data.forget import ForgetSample, load_forget_set
from ..errors import UsageError
from ..metrics.memorization import el_range
from ..models import load_model_and_tokenizer, prepare_tokenizer, weights_digest
from ..precision import inference
from . import cache
from .attacks import bnb_quantize, quantize_model, relearn, relearn_split, require_bitsandbytes
from .measure import Context, measure_forget, measure_holdout
from .result import AuditResult
from .summary import aggregates, holdout_rows, sequence_rows


def _spec(model) -> str:
    return model if isinstance(model, str) else model.config.name_or_path


def _load(model, tokenizer):
    if isinstance(model, str):
        return load_model_and_tokenizer(model)
    if tokenizer is None:
        raise ValueError("pass the tokenizer along with a loaded model")
    return model, prepare_tokenizer(tokenizer)


def _load_reference(reference, model, tokenizer):
    if isinstance(reference, str):
        loaded, ref_tokenizer = load_model_and_tokenizer(reference)
        if ref_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise UsageError(
                f"the reference model {reference!r} has another tokenizer than the model; "
                "give a reference with the same tokenizer (e.g. the model before planting)"
            )
        reference = loaded
    if (
        reference.get_input_embeddings().num_embeddings
        != model.get_input_embeddings().num_embeddings
    ):
        raise UsageError(
            "the reference model's vocabulary differs in size from the model's; give a "
            "reference with the same tokenizer"
        )
    return reference


def _samples(spec, tokenizer, model, prefix_length, data_dir) -> list[ForgetSample]:
    if not isinstance(spec, str):
        return list(spec)
    vocab = model.get_input_embeddings().num_embeddings
    return load_forget_set(spec, tokenizer, prefix_length, data_dir, vocab_size=vocab)


def planted_hashes(spec: str, depth: int = 3) -> set[str]:
    """Content hashes of what `memorize` planted into the model `spec` or the model it was
    unlearned from (followed through run manifests); empty when nothing is recorded."""
    path = Path(spec).expanduser()
    if depth == 0 or not path.exists():
        return set()
    for folder in (path, path.parent):
        record = folder / "memorize.json"
        if record.is_file():
            return set(json.loads(record.read_text()).get("planted_sha256", []))
    manifest = path.parent / "manifest.json"  # an unlearning run's model/: follow its input
    if manifest.is_file():
        return planted_hashes(json.loads(manifest.read_text())["config"]["model"], depth - 1)
    return set()


def _attack_sizes(parsed: list[tuple[str, int | None]]) -> dict[str, int]:
    """{"sample": N, "beam": WIDTH} of the decoding attacks asked for (absent: not run)."""
    sizes: dict[str, int] = {}
    for name, size in parsed:
        if name in DECODING_ATTACKS:
            if name in sizes:
                raise UsageError(f"the {name} attack is given twice; give it once")
            sizes[name] = size
    return sizes


class _Reference:
    """The reference model's measurements of forget and holdout sequences, as it is or
    after an attack: from the cache where the same weights measured the same sequences
    under the same settings and attack (`cache.py`), else measured, the model loaded
    only then, and cached."""

    def __init__(self, reference, model, tokenizer, ctx: Context):
        self.source, self.model, self.tokenizer, self.ctx = reference, model, tokenizer, ctx
        self.loaded = None
        self.weights = cache.folder_weights_key(reference) if isinstance(reference, str) else None
        if self.weights is None:
            self.weights = "weights:" + weights_digest(self._load())
        self.vocab = model.get_input_embeddings().num_embeddings

    def _load(self):
        if self.loaded is None:
            self.loaded = _load_reference(self.source, self.model, self.tokenizer)
        return self.loaded

    def rows(self, forget, holdout, attack: dict | None = None, attacked=None):
        """(forget rows, holdout rows or None). `attack` describes an attack for the
        cache key, and `attacked(reference)` makes the attacked copy to measure."""
        wanted = [("forget", forget, measure_forget)]
        if holdout:
            wanted.append(("holdout", holdout, measure_holdout))
        found, subject = {}, None
        for kind, samples, measure in wanted:
            key = cache.entry_key(self.weights, kind, samples, self.ctx, self.vocab, attack)
            rows = cache.load(key)
            if rows is not None:
                if self.ctx.progress:
                    print(f"reference model: {kind} measurements from the cache", file=sys.stderr)
            else:
                if subject is None:
                    subject = self._load() if attacked is None else attacked(self._load())
                with inference(self.ctx.settings.precision, subject):
                    rows = measure(subject, samples, self.ctx)
                cache.store(key, rows)
            found[kind] = rows
        return found["forget"], found.get("holdout")


def _check_sets(
    forget: list[ForgetSample], holdout: list[ForgetSample], attacks, planted: set[str]
) -> None:
    if not forget:
        raise UsageError("the forget set is empty; give at least one sequence to audit")
    in_forget = {s.content_hash() for s in forget}
    for s in holdout:
        if s.content_hash() in in_forget:
            raise UsageError(
                f"holdout sequence {s.id!r} is also in the forget set; a holdout must be "
                "text the model never saw"
            )
        if s.content_hash() in planted:
            raise UsageError(
                f"holdout sequence {s.id!r} was planted into the model (memorize.json); a "
                "holdout must be text the model never saw"
            )
    if any(name == "relearn" for name, _ in attacks) and len(forget) < 2:
        raise UsageError("the relearn attack needs at least 2 forget sequences (half to relearn)")


def _subject(model, forget, holdout, reference, ctx: Context) -> dict:
    """Rows and aggregates of one model (the input or an attacked copy) on the given sets.

    `reference` holds the reference model's measurements of the same forget and
    holdout sequences (or None), so that attacks reuse them instead of measuring again.
    """
    # bf16: the measurements on bfloat16 weights cast once; an attack's own training
    # (relearn) stays float32
    with inference(ctx.settings.precision, model):
        measured = measure_forget(model, forget, ctx)
        measured_holdout = measure_holdout(model, holdout, ctx) if holdout else []
    ref_forget, ref_holdout = reference if reference is not None else (None, None)
    held = holdout_rows(holdout, measured_holdout, ref_holdout)
    sequences = sequence_rows(forget, measured, ref_forget, held, ctx.settings)
    return {
        "sequences": sequences,
        "holdout": held,
        "aggregates": aggregates(sequences, held, ctx.settings),
    }


def _attacked(spec: str, model, relearned: list[ForgetSample], ctx: Context):
    """A copy of `model` under the attack `spec` (relearn: fine-tuned on `relearned`)."""
    name, bits = parse_attack(spec)
    settings = ctx.settings
    if name == "quantize":
        return quantize_model(model, bits, settings.quantize_group_size)
    if name == "bnb":
        return bnb_quantize(model, bits)
    ids = [s.input_ids for s in relearned]
    lr, batch = settings.relearn_lr, settings.relearn_batch_size
    return relearn(model, ids, ctx.pad_token_id, lr, batch, settings.seed)


def _attack(spec, model, forget, holdout, reference: _Reference | None, ctx: Context) -> dict:
    """The audit of an attacked copy of the model. The reference, when given, suffers the
    same attack (quantized the same way; relearned on the same half), and the verdicts
    compare the two: a record the attack brings back no further than it brings back a
    never-trained model's is not leaked."""
    name, _ = parse_attack(spec)
    settings = ctx.settings
    trained, audited = [], list(range(len(forget)))
    if name == "relearn":
        trained, audited = relearn_split(len(forget), settings.seed)
    relearned = [forget[i] for i in trained]
    relearned_on = [s.content_hash() for s in relearned]
    subset = [forget[i] for i in audited]
    ref = None
    if reference is not None:  # measured (or found cached) first: one attacked copy at a time
        described = {
            "attack": spec,
            "quantize_group_size": settings.quantize_group_size,
            "relearn_lr": settings.relearn_lr,
            "relearn_batch_size": settings.relearn_batch_size,
            "relearned_on": relearned_on,
        }
        ref = reference.rows(
            subset, holdout, described, lambda m: _attacked(spec, m, relearned, ctx)
        )
    attacked = _attacked(spec, model, relearned, ctx)
    result = _subject(attacked, subset, holdout, ref, ctx)
    return result | ({"relearned_on": relearned_on} if name == "relearn" else {})


def audit(
    model: str | PreTrainedModel,
    forget: str | list[ForgetSample],
    tokenizer: PreTrainedTokenizerBase | None = None,
    holdout: str | list[ForgetSample] | None = None,
    reference: str | PreTrainedModel | None = None,
    settings: AuditSettings | None = None,
    out: str | Path | None = None,
    redact: bool = False,
    attacks=(),
    data_dir: str | Path | None = None,
    prefix_length: int = 50,
    progress: bool = False,
) -> AuditResult:
    """Audit `model` on `forget` (specs or loaded); see the package docstring.

    `attacks`: "sample[:N]" and "beam[:WIDTH]" add the sampling and beam-search
    attacks to every model measured; quantize:BITS, bnb:4|8 and relearn each audit an
    attacked copy (`parse_attack`) against the reference under the same attack. The
    reference's measurements come from the cache (`cache.py`) when an earlier audit made
    them.
    """
    settings = settings or AuditSettings()
    parsed = [parse_attack(a) for a in attacks]  # a bad attack fails before any loading
    sizes = _attack_sizes(parsed)
    if any(name == "bnb" for name, _ in parsed):
        require_bitsandbytes()
    started = time.perf_counter()
    recorded = asdict(settings) | {
        "el_range": el_range(settings.el_window),  # what every EL of the audit averages over
        "model": _spec(model),
        "reference": None if reference is None else _spec(reference),
        "forget": forget if isinstance(forget, str) else "<samples>",
        "holdout": holdout if isinstance(holdout, str) or holdout is None else "<samples>",
        "attacks": list(attacks),
        "num_samples": sizes.get("sample", 0),
        "num_beams": sizes.get("beam", 0),
        "redact": redact,
        "prefix_length": prefix_length,
    }
    planted = planted_hashes(model) if isinstance(model, str) else set()
    model, tokenizer = _load(model, tokenizer)
    forget = _samples(forget, tokenizer, model, prefix_length, data_dir)
    holdout = (
        [] if holdout is None else _samples(holdout, tokenizer, model, prefix_length, data_dir)
    )
    _check_sets(forget, holdout, parsed, planted)
    ctx = Context(
        tokenizer,
        settings,
        progress,
        num_samples=sizes.get("sample", 0),
        num_beams=sizes.get("beam", 0),
        redact=redact,
    )
    ref = None if reference is None else _Reference(reference, model, tokenizer, ctx)
    base = _subject(model, forget, holdout, None if ref is None else ref.rows(forget, holdout), ctx)
    attacked = {
        spec: _attack(spec, model, forget, holdout, ref, ctx)
        for spec, (name, _) in zip(attacks, parsed, strict=True)
        if name not in DECODING_ATTACKS
    }
    for result in attacked.values():
        result.pop("holdout")  # the same sequences as the main holdout, under another model
    recorded["seconds"] = round(time.perf_counter() - started, 2)
    result = AuditResult(recorded, base["sequences"], base["aggregates"], base["holdout"], attacked)
    if out is not None:
        result.write(out)
    return result
