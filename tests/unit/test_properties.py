"""Property-based tests of the metrics (hypothesis): ranges, a model that reproduces its
own text, n-gram edge cases, similarity of identical strings."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icu_unlearn.generation import generate_continuations
from icu_unlearn.metrics.memorization import (
    memorization_scores,
    memorization_scores_literal,
    ngram_overlap,
)
from icu_unlearn.metrics.similarity import bertscore_f1, sentence_bleu
from tests.conftest import tiny_gpt_neo

VOCAB = 40
MODEL = tiny_gpt_neo(vocab_size=VOCAB).double()
SLOW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])

tokens = st.integers(min_value=0, max_value=VOCAB - 1)


@st.composite
def scored_sequences(draw):
    """1-3 sequences of 6-24 tokens, each with a valid prefix length and n."""
    n = draw(st.integers(1, 4))
    seqs, t0s = [], []
    for _ in range(draw(st.integers(1, 3))):
        length = draw(st.integers(n + 2, 24))
        seqs.append(draw(st.lists(tokens, min_size=length, max_size=length)))
        t0s.append(draw(st.integers(1, length - n)))
    return seqs, t0s, n


@SLOW
@given(scored_sequences())
def test_el_and_ma_are_in_unit_interval_and_fast_equals_reference(case):
    seqs, t0s, n = case
    fast = memorization_scores(MODEL, seqs, t0s, 0, n=n, batch_size=2, decode_batch_size=3)
    ref = memorization_scores_literal(MODEL, seqs, t0s, 0, n=n)
    for el, ma in zip(fast.extraction_likelihood, fast.memorization_accuracy, strict=True):
        assert 0.0 <= el <= 1.0 and 0.0 <= ma <= 1.0
    assert fast.extraction_likelihood == pytest.approx(ref.extraction_likelihood, abs=1e-9)
    assert fast.memorization_accuracy == pytest.approx(ref.memorization_accuracy, abs=1e-9)


@SLOW
@given(st.lists(tokens, min_size=1, max_size=6), st.integers(6, 20), st.integers(1, 4), st.data())
def test_a_model_reproducing_its_input_has_ma_and_el_one(prompt, new, n, data):
    """The sequence is the model's own greedy text after a random prompt: the model
    'copies' it perfectly, so every metric of memorization is at its maximum."""
    seq = prompt + generate_continuations(MODEL, [prompt], new, pad_token_id=0)[0]
    t0 = data.draw(st.integers(len(prompt), len(seq) - n))
    # from every prefix that contains the whole prompt, the rest is reproduced exactly
    window = memorization_scores(MODEL, [seq], [t0], 0, n=n, window=True)
    assert window.extraction_likelihood == [1.0]
    # all prefixes: those inside the prompt may continue differently; MA counts them too
    scores = memorization_scores(MODEL, [seq], [t0], 0, n=n)
    assert scores.memorization_accuracy[0] >= (len(seq) - len(prompt)) / (len(seq) - 1)
    if len(prompt) == 1:
        assert scores.memorization_accuracy == [1.0] and scores.extraction_likelihood == [1.0]


@given(st.lists(tokens, min_size=1, max_size=30), st.integers(1, 5))
def test_ngram_overlap_edge_cases(sequence, n):
    if len(sequence) < n:  # no n-gram at all: an error, never a silent 0 or 1
        with pytest.raises(ValueError, match="no"):
            ngram_overlap(sequence, sequence, n)
        return
    assert ngram_overlap(sequence, sequence, n) == 1.0
    shifted = [t + VOCAB for t in sequence]  # disjoint vocabulary
    assert ngram_overlap(sequence, shifted, n) == 0.0
    assert ngram_overlap(sequence, [], n) == 0.0  # nothing to match against
    other = [t % 3 for t in sequence]
    assert 0.0 <= ngram_overlap(sequence, other, n) <= 1.0


words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


@given(st.lists(words, min_size=4, max_size=12))
def test_bleu_of_identical_strings_is_one(word_list):
    text = " ".join(word_list)
    assert sentence_bleu([text], [text])[0] == pytest.approx(1.0)


@settings(max_examples=10, deadline=None)
@given(st.lists(words, min_size=1, max_size=12))
def test_bertscore_of_identical_strings_is_one(word_list):
    text = " ".join(word_list)
    assert bertscore_f1([text], [text])[0] == pytest.approx(1.0, abs=1e-5)
