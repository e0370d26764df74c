"""The four ways a utility task is scored: multiple choice, last word, perplexity, dialogue F1.

Each scorer takes a task's examples and returns a `TaskScore`: the task's value,
extra aggregate fields, and one JSON-serialisable record per example.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...generation import generate_continuations, longest_first
from ..perplexity import sequence_nll
from .engine import encode_requests, loglikelihoods

# Longest text a perplexity or prompt is cut to, in tokens: the model's own limit
# when smaller. 1024 covers every Pile and Wikitext text of the mirror (at most
# ~650 SmolLM2 tokens) and keeps logits of a batch of 16 under ~3 GB.
MAX_LENGTH = 1024


@dataclass(frozen=True)
class ScoringSettings:
    batch_size: int  # model inputs per forward pass (prompts per generate call)
    max_new_tokens: int  # dialogue replies: tokens generated before cutting at a newline
    max_length: int  # tokens a model input may hold
    bar: Callable  # tqdm-like: bar(total=...) -> a context manager with .update(n)


@dataclass
class TaskScore:
    value: float
    examples: list[dict]
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ChoiceExample:
    """Option i is scored as log P(continuations[i] | contexts[i])."""

    id: int | str
    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    norm_chars: tuple[int, ...]  # acc_norm divides option i's log-likelihood by this
    gold: int


def choice_example(
    id: int | str, context: str, choices: Sequence[str], gold: int, delimiter: str = " "
) -> ChoiceExample:
    """One context, one continuation per answer: delimiter + answer (the harness's target_delimiter).

    acc_norm divides by the answer's length in characters without the delimiter, as the
    harness divides by `len` of its choice string (v0.3 and today; its bytes variant is
    acc_bytes, which we do not report).
    """
    return ChoiceExample(
        id,
        (context,) * len(choices),
        tuple(delimiter + c for c in choices),
        tuple(len(c) for c in choices),
        gold,
    )


def partial_example(
    id: int | str, contexts: Sequence[str], continuation: str, gold: int
) -> ChoiceExample:
    """Partial evaluation (Winogrande): one context per option, the same continuation scored."""
    size = len(continuation.strip())  # the same for every option: acc_norm is acc
    return ChoiceExample(
        id, tuple(contexts), (continuation,) * len(contexts), (size,) * len(contexts), gold
    )


@dataclass(frozen=True)
class CompletionExample:
    """LAMBADA: does greedy decoding after `context` produce `continuation` exactly?"""

    id: int | str
    context: str
    continuation: str


@dataclass(frozen=True)
class TextExample:
    id: int | str
    text: str


@dataclass(frozen=True)
class DialogueExample:
    id: int | str
    prompt: str  # the earlier turns, formatted by the task
    reply: str  # the true last turn


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda k: (values[k], -k))  # first of equal maxima


def score_choices(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[ChoiceExample],
    settings: ScoringSettings,
) -> TaskScore:
    """acc: the option with the highest summed log-likelihood is the gold one; acc_norm:
    the same after dividing each by its answer's length in characters (lm-evaluation-harness)."""
    pairs = [(c, x) for e in examples for c, x in zip(e.contexts, e.continuations, strict=True)]
    with settings.bar(total=len(pairs)) as bar:
        scores = loglikelihoods(
            model,
            encode_requests(tokenizer, pairs),
            tokenizer.pad_token_id,
            settings.batch_size,
            settings.max_length,
            on_batch=bar.update,
        )
    records, start = [], 0
    for e in examples:
        lls = [s.logprob for s in scores[start : start + len(e.contexts)]]
        start += len(e.contexts)
        pred = _argmax(lls)
        pred_norm = _argmax([ll / n for ll, n in zip(lls, e.norm_chars, strict=True)])
        records.append(
            {
                "id": e.id,
                "gold": e.gold,
                "prediction": pred,
                "prediction_norm": pred_norm,
                "loglikelihoods": lls,
                "acc": float(pred == e.gold),
                "acc_norm": float(pred_norm == e.gold),
            }
        )
    return TaskScore(
        _mean([r["acc"] for r in records]),
        records,
        {"acc_norm": _mean([r["acc_norm"] for r in records])},
    )


def score_last_word(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[CompletionExample],
    settings: ScoringSettings,
) -> TaskScore:
    """acc: every token of the last word is the greedy argmax (harness lambada); ppl:
    exp of minus the mean log-likelihood of the last word (per word, not per token)."""
    with settings.bar(total=len(examples)) as bar:
        scores = loglikelihoods(
            model,
            encode_requests(tokenizer, [(e.context, e.continuation) for e in examples]),
            tokenizer.pad_token_id,
            settings.batch_size,
            settings.max_length,
            on_batch=bar.update,
        )
    records = [
        {
            "id": e.id,
            "gold": e.continuation,
            "prediction": tokenizer.decode(s.greedy),
            "loglikelihood": s.logprob,
            "acc": float(s.is_greedy),
        }
        for e, s in zip(examples, scores, strict=True)
    ]
    ppl = math.exp(-_mean([r["loglikelihood"] for r in records]))
    return TaskScore(_mean([r["acc"] for r in records]), records, {"ppl": ppl})


def score_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[TextExample],
    settings: ScoringSettings,
) -> TaskScore:
    """Corpus perplexity: exp(total NLL / total predicted tokens), each text cut to its
    first `max_length` tokens; texts of fewer than two tokens predict nothing and are skipped.

    `metrics.perplexity`'s computation, run here in chunks for the progress bar and a
    per-text NLL.
    """
    ids = tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]
    kept = [(e, s[: settings.max_length]) for e, s in zip(examples, ids, strict=True)]
    kept = [(e, s) for e, s in kept if len(s) >= 2]
    nll = [0.0] * len(kept)
    with settings.bar(total=len(kept)) as bar:
        for chunk in longest_first([len(s) for _, s in kept], settings.batch_size):
            seqs = [kept[i][1] for i in chunk]
            for i, n in zip(
                chunk,
                sequence_nll(model, seqs, tokenizer.pad_token_id, settings.batch_size),
                strict=True,
            ):
                nll[i] = n
            bar.update(len(chunk))
    records = [
        {"id": e.id, "num_tokens": len(s), "nll": n} for (e, s), n in zip(kept, nll, strict=True)
    ]
    predicted = sum(len(s) - 1 for _, s in kept)
    value = math.exp(sum(nll) / predicted) if predicted else float("nan")
    return TaskScore(value, records, {"num_tokens": predicted})


def normalize_answer(text: str) -> str:
    """SQuAD / ParlAI normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_PUNCTUATION = frozenset(string.punctuation)


def unigram_f1(prediction: str, reference: str) -> float:
    """F1 of the normalised word multisets; 0 when they share no word (an empty reply, say)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def cut_reply(text: str) -> str:
    """A generated reply ends at the first newline: the next line is the other speaker's."""
    return text.split("\n", 1)[0].strip()


def score_dialogue(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[DialogueExample],
    settings: ScoringSettings,
) -> TaskScore:
    """Greedy reply to each prompt (`max_new_tokens`, cut at the first EOS and newline),
    scored by unigram F1 against the true last turn; value: the mean F1."""
    keep = settings.max_length - settings.max_new_tokens  # the latest turns when too long
    prompts = [
        p[-keep:]
        for p in tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    ]
    replies: list[list[int]] = [[] for _ in examples]
    with settings.bar(total=len(examples)) as bar:
        for chunk in longest_first([len(p) for p in prompts], settings.batch_size):
            outputs = generate_continuations(
                model,
                [prompts[i] for i in chunk],
                settings.max_new_tokens,
                tokenizer.pad_token_id,
                batch_size=settings.batch_size,
            )
            for i, out in zip(chunk, outputs, strict=True):
                replies[i] = out
            bar.update(len(chunk))
    records = []
    for e, out in zip(examples, replies, strict=True):
        if tokenizer.eos_token_id in out:  # decoding runs past EOS; the reply ends there
            out = out[: out.index(tokenizer.eos_token_id)]
        prediction = cut_reply(tokenizer.decode(out, skip_special_tokens=True))
        records.append(
            {
                "id": e.id,
                "prediction": prediction,
                "gold": e.reply,
                "f1": unigram_f1(prediction, e.reply),
            }
        )
    return TaskScore(_mean([r["f1"] for r in records]), records)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
