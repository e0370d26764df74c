"""BLEU, BERTScore and entropy agree with the libraries and with hand-worked values."""

from __future__ import annotations

import math

import bert_score
import pytest
import sacrebleu

from icu_unlearn.errors import UsageError
from icu_unlearn.metrics.similarity import (
    BLEU_SMOOTHING,
    bertscore_f1,
    default_bertscore_model,
    sentence_bleu,
    token_entropy,
)

HYPS = ["the cat sat on the mat", "call me at 555 0134", "", "completely different words"]
REFS = ["the cat sat on the mat", "call me at 555 0199 tonight", "some text", "nothing alike here"]


def test_bleu_matches_sacrebleu_on_a_0_1_scale():
    for smoothing in BLEU_SMOOTHING:
        for lowercase in (True, False):
            expected = [
                sacrebleu.sentence_bleu(h, [r], smooth_method=smoothing, lowercase=lowercase).score
                / 100
                for h, r in zip(HYPS, REFS, strict=True)
            ]
            ours = sentence_bleu(HYPS, REFS, smoothing=smoothing, lowercase=lowercase)
            assert ours == pytest.approx(expected)
    # sacrebleu's own defaults (exp smoothing, case kept) are one explicit choice away
    library = [sacrebleu.sentence_bleu(h, [r]).score / 100 for h, r in zip(HYPS, REFS, strict=True)]
    assert sentence_bleu(HYPS, REFS, smoothing="exp", lowercase=False) == pytest.approx(library)
    assert sentence_bleu(HYPS[:1], REFS[:1]) == pytest.approx([1.0])


# Two fluent English sentences with words in common ("the", "and", "of", "for") but no
# 2-gram: the generation ICU aims at, a sensible text that is not the true suffix.
FLUENT = (
    "The weather was pleasant, so we walked along the river and talked about our plans "
    "for the summer."
)
UNRELATED = (
    "Shares of the company fell sharply after the quarterly report showed lower revenue "
    "than analysts expected."
)


def test_unsmoothed_bleu_of_a_fluent_unrelated_pair_is_zero():
    """The default (unsmoothed) scores it 0, under b = 0.01; exp smoothing lifts it above b,
    so IUR's BLEU test would never pass for fluent forgetting (issue 16, item 1)."""
    assert sentence_bleu([FLUENT], [UNRELATED]) == [0.0]
    (smoothed,) = sentence_bleu([FLUENT], [UNRELATED], smoothing="exp")
    assert smoothed > 0.01
    assert smoothed == pytest.approx(0.0252, abs=1e-4)


def test_bleu_lower_cases_words_by_default():
    """A case-only difference: the same words lower-cased (1.0), no word in common otherwise."""
    hyp, ref = "The Cat Sat On The Mat Today", "the cat sat on the mat today"
    assert sentence_bleu([hyp], [ref]) == pytest.approx([1.0])
    assert sentence_bleu([hyp], [ref], lowercase=False) == [0.0]


def test_unknown_bleu_smoothing_names_the_choices():
    with pytest.raises(UsageError, match="none, exp, floor, add-k"):
        sentence_bleu(HYPS, REFS, smoothing="chen")


def test_bertscore_matches_the_library():
    _, _, f1 = bert_score.score(
        HYPS[:2] + HYPS[3:],
        REFS[:2] + REFS[3:],
        model_type=default_bertscore_model(),
        num_layers=6,
    )
    ours = bertscore_f1(HYPS[:2] + HYPS[3:], REFS[:2] + REFS[3:])
    assert ours == pytest.approx(f1.tolist(), abs=1e-6)
    assert ours[0] == pytest.approx(1.0, abs=1e-5)
    assert ours[1] > ours[2]


def test_bertscore_of_an_empty_side_is_zero_and_the_others_are_the_librarys():
    """The library itself fails on an empty sentence under transformers 5 (a model being
    unlearned generates them); its definition for that case is a score of 0."""
    with pytest.raises(AttributeError):
        bert_score.score(HYPS, REFS, model_type=default_bertscore_model(), num_layers=6)
    ours = bertscore_f1(HYPS + ["words"], REFS + ["  "])
    alone = bertscore_f1(HYPS[:2] + HYPS[3:], REFS[:2] + REFS[3:])
    assert ours[2] == 0.0 and ours[4] == 0.0
    assert ours[:2] + ours[3:4] == pytest.approx(alone, abs=1e-6)


def test_entropy_hand_worked():
    assert token_entropy([7, 7, 7, 7]) == 0.0
    assert token_entropy([1, 2]) == pytest.approx(1.0)
    # p = (1/2, 1/4, 1/4): 0.5*1 + 2 * 0.25*2 = 1.5 bits
    assert token_entropy([1, 1, 2, 3]) == pytest.approx(1.5)
    assert token_entropy(list(range(8))) == pytest.approx(math.log2(8))
    assert token_entropy([]) == 0.0
