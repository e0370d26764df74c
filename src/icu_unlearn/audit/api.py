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
from ..generation import model_device
from ..metrics.memorization import el_range
from ..models import load_model_and_tokenizer, prepare_tokenizer, weights_digest
from ..precision import autocast
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


def _reference_rows(reference, model, tokenizer, forget, holdout, ctx: Context):
    """The reference model's measurements of the forget and holdout sequences: from the
    cache where the same weights measured the same sequences under the same settings
    (`cache.py`), else measured, the model loaded only then, and cached."""
    weights = cache.folder_weights_key(reference) if isinstance(reference, str) else None
    loaded = None
    if weights is None:
        loaded = _load_reference(reference, model, tokenizer)
        weights = "weights:" + weights_digest(loaded)
    vocab = model.get_input_embeddings().num_embeddings

    def rows(kind, samples, measure):
        nonlocal loaded
        key = cache.entry_key(weights, kind, samples, ctx, vocab)
        found = cache.load(key)
        if found is not None:
            if ctx.progress:
                print(f"reference model: {kind} measurements from the cache", file=sys.stderr)
            return found
        if loaded is None:
            loaded = _load_reference(reference, model, tokenizer)
        with autocast(ctx.settings.precision, model_device(loaded)):
            measured = measure(loaded, samples, ctx)
        cache.store(key, measured)
        return measured

    return (
        rows("forget", forget, measure_forget),
        rows("holdout", holdout, measure_holdout) if holdout else None,
    )


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
    # bf16: the measurements under autocast; an attack's own training (relearn) stays float32
    with autocast(ctx.settings.precision, model_device(model)):
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


def _attack(spec, model, forget, holdout, reference, ctx: Context) -> dict:
    name, bits = parse_attack(spec)
    settings = ctx.settings
    if name in ("quantize", "bnb"):
        if name == "quantize":
            attacked = quantize_model(model, bits, settings.quantize_group_size)
        else:
            attacked = bnb_quantize(model, bits)
        return _subject(attacked, forget, holdout, reference, ctx)
    trained, audited = relearn_split(len(forget), settings.seed)
    attacked = relearn(
        model,
        [forget[i].input_ids for i in trained],
        ctx.pad_token_id,
        settings.relearn_lr,
        settings.relearn_batch_size,
        settings.seed,
    )
    if reference is not None:  # the reference's rows of the audited half
        reference = ([reference[0][i] for i in audited], reference[1])
    result = _subject(attacked, [forget[i] for i in audited], holdout, reference, ctx)
    return result | {"relearned_on": [forget[i].content_hash() for i in trained]}


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
    attacked copy (`parse_attack`). The reference's measurements come from the cache
    (`cache.py`) when an earlier audit made them.
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
    ref = None
    if reference is not None:
        ref = _reference_rows(reference, model, tokenizer, forget, holdout, ctx)
    base = _subject(model, forget, holdout, ref, ctx)
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
