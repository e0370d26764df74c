"""`evaluate()`: memorization metrics per forget sample, the API behind `icu-unlearn eval`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import ScoringSettings
from .data.forget import ForgetSample, load_forget_set
from .distributed import Processes
from .io import atomic_write_json, atomic_write_jsonl
from .metrics.judge import JudgeConfig, judge_generations
from .metrics.memorization import el_range, memorization_pass, memorization_scores
from .metrics.similarity import (
    bertscore_f1,
    default_bertscore_model,
    sentence_bleu,
    token_entropy,
)
from .models import load_model_and_tokenizer
from .precision import HELP as PRECISION_HELP
from .precision import check_precision
from .privacy import redact_row


@dataclass
class EvalSettings(ScoringSettings):
    """`icu-unlearn eval`'s settings: the scoring ones plus the metrics' own."""

    el_n: int = field(default=10, metadata={"help": "n-gram size of EL; the paper reports EL_10"})
    el_window: bool = field(
        default=True,
        metadata={
            "help": "EL over prefix lengths >= t0 only, as a run scores it (stop.el_window) "
            "and the authors' code did; --no-el-window: every prefix length (Eq. 7)"
        },
    )
    judge: JudgeConfig | None = field(
        default=None,
        metadata={"help": "the paper's GPT evaluation, when an endpoint is given"},
    )
    precision: str = field(default="fp32", metadata={"help": PRECISION_HELP})

    def __post_init__(self):
        super().__post_init__()
        check_precision(self.precision)


@dataclass
class EvalResult:
    samples: list[dict]
    summary: dict
    settings: dict = field(default_factory=dict)

    def write(self, out: str | Path) -> None:
        out = Path(out)
        atomic_write_jsonl(out / "memorization.jsonl", self.samples)
        atomic_write_json(out / "summary.json", self.summary)


def metric_keys(el_n: int) -> list[str]:
    return [f"el_{el_n}", "ma", "bertscore_f1", "bleu", "entropy"]


def score_samples(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: list[ForgetSample],
    settings: EvalSettings,
    progress: bool = False,
    timings: dict | None = None,
    procs: Processes | None = None,
    similarity: bool = True,
    el: bool = True,
    el_for: Callable[[list[dict]], set[str]] | None = None,
    suffix_nll: bool = False,
    drafts: dict[str, dict[int, list[int]]] | None = None,
) -> list[dict]:
    """One row per sample: EL_n, MA, BERTScore F1, BLEU, entropy and the greedy generation.

    With `procs` (a run's processes) each process scores its share and every process
    gets every row, in order. `similarity=False` leaves out BERTScore, BLEU, entropy and
    the generation's text (the retain probe and the thresholds need EL and MA only);
    `el=False` scores MA alone, one forward pass (planting stops on MA).
    `el_for`, given every sample's row of MA (and suffix NLL), returns the ids whose EL
    is worth its decoding; the others' EL is None (their MA and generation are scored).
    `suffix_nll`: each row gains its suffix's mean NLL, nats a token, from the same pass.
    `drafts` ({sample id: {q: greedy continuation of x[:q]}}, a run's across epochs): the
    continuations of an earlier scoring, verified instead of decoded where they still
    hold, and updated with this scoring's (every process gets every sample's); the rows
    are the same with or without them.
    `timings`, when given, receives the seconds spent on EL/MA (with the greedy
    generation they share; `teacher_forced_seconds` of them on the pass that gives MA)
    and on BERTScore + BLEU.
    """
    mine = samples if procs is None else procs.score_share(samples)
    gather = (lambda rows: rows) if procs is None else procs.gather
    started = time.perf_counter()
    scored = memorization_pass(
        model,
        [s.input_ids for s in mine],
        [s.prefix_length for s in mine],
        tokenizer.pad_token_id,
        settings.batch_size,
        suffix_nll=suffix_nll,
        precision=settings.precision,
    ) if mine else None  # fmt: skip
    greedy, ma, nll = (scored.greedy, scored.ma, scored.suffix_nll) if mine else (None, [], [])
    rows = [{"id": s.id, "ma": m} | _facts(s) for s, m in zip(mine, ma, strict=True)]
    if suffix_nll:
        for row, value in zip(rows, nll, strict=True):
            row["suffix_nll"] = value
    if timings is not None:
        timings["teacher_forced_seconds"] = time.perf_counter() - started
    if not el:
        return gather(rows)
    wanted = None if el_for is None else el_for(gather(rows))
    el_wanted = [wanted is None or s.id in wanted for s in mine]
    mine_drafts = None if drafts is None else [drafts.setdefault(s.id, {}) for s in mine]
    rows = _score(
        model, tokenizer, mine, settings, progress, timings, similarity, rows, greedy, el_wanted,
        mine_drafts,
    )  # fmt: skip
    if drafts is not None and procs is not None and procs.world > 1 and not procs.lockstep:
        for part in procs.everyone({s.id: drafts[s.id] for s in mine}):
            drafts.update(part)
    if timings is not None:
        timings["memorization_seconds"] = (
            time.perf_counter() - started - timings["similarity_seconds"]
        )
    return gather(rows)


def _facts(sample: ForgetSample) -> dict:
    return {
        "prefix_tokens": sample.prefix_length,
        "suffix_tokens": len(sample.suffix_ids),
        "sha256": sample.content_hash(),
    }


def _score(
    model, tokenizer, samples, settings, progress, timings, similarity, rows, greedy, el_wanted,
    drafts,
) -> list[dict]:  # fmt: skip
    el, gens = [], []
    step = settings.batch_size
    for k in tqdm(range(0, len(samples), step), desc="EL/MA", disable=not progress, unit="batch"):
        batch = samples[k : k + step]
        scores = memorization_scores(
            model,
            [s.input_ids for s in batch],
            [s.prefix_length for s in batch],
            pad_token_id=tokenizer.pad_token_id,
            n=settings.el_n,
            window=settings.el_window,
            batch_size=step,
            decode_batch_size=settings.decode_batch_size,
            el_for=el_wanted[k : k + step],
            greedy=greedy[k : k + step],
            precision=settings.precision,
            drafts=None if drafts is None else drafts[k : k + step],
        )
        el += scores.extraction_likelihood
        gens += scores.generations
    started = time.perf_counter()
    key = f"el_{settings.el_n}"
    # the rows' key order: id, EL, MA, then what the teacher-forced pass gave
    rows = [{"id": r["id"], key: el[i]} | r for i, r in enumerate(rows)]
    if similarity and samples:
        _add_similarity(rows, gens, tokenizer, samples, settings, progress)
    if timings is not None:
        timings["similarity_seconds"] = time.perf_counter() - started
    return rows


def _add_similarity(rows, gens, tokenizer, samples, settings, progress) -> None:
    """BERTScore F1, BLEU and entropy of each greedy generation, and the judge's score."""
    texts = [tokenizer.decode(g, skip_special_tokens=True) for g in gens]
    references = [s.suffix for s in samples]
    bert = bertscore_f1(
        texts,
        references,
        model_type=settings.bertscore_model,
        num_layers=settings.bertscore_layers,
    )
    bleu = sentence_bleu(texts, references, smoothing=settings.bleu_smoothing)
    judged = None
    if settings.judge is not None:
        judged = judge_generations(
            settings.judge, [s.prefix for s in samples], references, texts, progress=progress
        )
    for i, row in enumerate(rows):
        extra = {
            "bertscore_f1": bert[i],
            "bleu": bleu[i],
            "entropy": token_entropy(gens[i]),
            "generation": texts[i],
        }
        # the rows' key order: metrics, generation, the sample's facts, the judge's
        rows[i] = {k: row[k] for k in ("id", f"el_{settings.el_n}", "ma")} | extra | row
        if judged is not None:
            rows[i] |= {"judge_score": judged["scores"][i], "judge_reply": judged["replies"][i]}


def summarize(rows: list[dict], el_n: int) -> dict:
    """The mean of every metric the rows hold (a planting run's rows hold MA alone)."""
    keys = [k for k in metric_keys(el_n) if k in rows[0]]
    # a metric some rows skipped (EL where it could decide nothing) has no mean
    means = {
        k: None if any(r[k] is None for r in rows) else sum(r[k] for r in rows) / len(rows)
        for k in keys
    }
    if rows and "judge_score" in rows[0]:  # the mean over the replies that had a score
        scores = [r["judge_score"] for r in rows if r["judge_score"] is not None]
        means["judge"] = sum(scores) / len(scores) if scores else None
    return means | {"num_samples": len(rows)}


def evaluate(
    model: str | PreTrainedModel,
    forget: str | list[ForgetSample],
    tokenizer: PreTrainedTokenizerBase | None = None,
    settings: EvalSettings | None = None,
    prefix_length: int = 50,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    trust_remote_code: bool = False,
    redact: bool = False,
) -> EvalResult:
    """Memorization metrics of `model` on `forget` (a spec or loaded samples)."""
    settings = settings or EvalSettings()
    model_spec = model if isinstance(model, str) else model.config.name_or_path
    if isinstance(model, str):
        model, tokenizer = load_model_and_tokenizer(model, trust_remote_code=trust_remote_code)
    if tokenizer is None:
        raise ValueError("pass the tokenizer along with a loaded model")
    samples = (
        load_forget_set(
            forget,
            tokenizer,
            prefix_length,
            data_dir,
            vocab_size=model.get_input_embeddings().num_embeddings,
        )
        if isinstance(forget, str)
        else forget
    )
    start = time.perf_counter()
    rows = score_samples(model, tokenizer, samples, settings, progress)
    if redact:  # the generations repeat what was memorized: hashes only
        rows = [redact_row(r) for r in rows]
    recorded = asdict(settings) | {
        "el_range": el_range(settings.el_window),  # what the EL of every row averages over
        "bertscore_model": settings.bertscore_model or default_bertscore_model(),
        "model": model_spec,
        "forget": forget if isinstance(forget, str) else "<samples>",
        "seconds": round(time.perf_counter() - start, 2),
    }
    summary = summarize(rows, settings.el_n) | {"settings": recorded}
    result = EvalResult(rows, summary, recorded)
    if out is not None:
        result.write(out)
    return result
