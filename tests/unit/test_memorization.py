"""EL_n and MA: hand-worked values, and the fast path held to the reference."""

from __future__ import annotations

import random

import pytest
import torch

from icu_unlearn.errors import UsageError
from icu_unlearn.generation import generate_continuations
from icu_unlearn.metrics.memorization import (
    memorization_accuracy,
    memorization_pass,
    memorization_scores,
    memorization_scores_literal,
    ngram_overlap,
)
from icu_unlearn.models import gpt2_tokenizer, prepare_tokenizer
from icu_unlearn.scoring import teacher_forced
from tests.conftest import TINY_MODELS, tiny_gpt_neo


def test_ngram_overlap_hand_worked():
    # generated 2-grams: (1,2) (2,3) (3,9); reference 2-grams: (1,2) (2,3) (3,4) -> 2 of 3
    assert ngram_overlap([1, 2, 3, 9], [1, 2, 3, 4], 2) == pytest.approx(2 / 3)
    # membership, not clipped counts: (5,5) appears once in the reference, 3 times generated
    assert ngram_overlap([5, 5, 5, 5], [5, 5, 1, 2], 2) == 1.0
    assert ngram_overlap([7, 8], [8, 7], 1) == 1.0
    with pytest.raises(ValueError):
        ngram_overlap([1], [1], 2)


def _semi_memorized(model, vocab, lengths, seed):
    """Sequences that follow the model's own greedy path with random edits, so that
    EL and MA are neither 0 nor 1 and the fast path meets matches and mismatches."""
    rng = random.Random(seed)
    seqs = []
    for length in lengths:
        seq = [rng.randrange(vocab) for _ in range(3)]
        while len(seq) < length:
            step = rng.randint(2, 6)
            seq += generate_continuations(model, [seq], step, pad_token_id=0)[0]
            if rng.random() < 0.6:
                seq.append(rng.randrange(vocab))
        seqs.append(seq[:length])
    return seqs


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
@pytest.mark.parametrize("window", [False, True])
def test_fast_path_equals_reference(family, window):
    vocab = 48
    model = TINY_MODELS[family](vocab_size=vocab).double()
    seqs = _semi_memorized(model, vocab, [40, 33, 26, 40, 19, 31], seed=1)
    t0s = [12, 10, 8, 20, 6, 15]
    for n in (1, 4):
        # small batches and decode batches: rows cross batch borders
        fast = memorization_scores(
            model,
            seqs,
            t0s,
            0,
            n=n,
            window=window,
            batch_size=2,
            decode_batch_size=5,
        )
        ref = memorization_scores_literal(model, seqs, t0s, 0, n=n, window=window)
        assert fast.extraction_likelihood == pytest.approx(ref.extraction_likelihood, abs=1e-6)
        assert fast.memorization_accuracy == pytest.approx(ref.memorization_accuracy, abs=1e-6)
        assert fast.generations == ref.generations
    # the scenario is not degenerate: both metrics vary strictly inside (0, 1)
    assert 0 < min(ref.memorization_accuracy) < max(ref.memorization_accuracy) < 1
    assert 0 < max(ref.extraction_likelihood) < 1


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_fast_path_equals_reference_float32(family):
    model = TINY_MODELS[family](vocab_size=48, seed=3)
    seqs = _semi_memorized(model, 48, [30, 22, 27], seed=4)
    fast = memorization_scores(model, seqs, [10, 8, 9], 0, n=4, batch_size=3)
    ref = memorization_scores_literal(model, seqs, [10, 8, 9], 0, n=4)
    ma_only = memorization_accuracy(model, seqs, 0, batch_size=2)
    assert ma_only == pytest.approx(ref.memorization_accuracy, abs=1e-6)
    assert fast.extraction_likelihood == pytest.approx(ref.extraction_likelihood, abs=1e-6)
    assert fast.memorization_accuracy == pytest.approx(ref.memorization_accuracy, abs=1e-6)


def test_tokenizer_without_pad_token():
    """GPT-2's tokenizer has no pad token: EOS (50256) pads, sequences differ in length."""
    gpt2 = gpt2_tokenizer()  # a fresh one: the session fixture may have been given a pad
    assert gpt2.pad_token is None
    tokenizer = prepare_tokenizer(gpt2)
    assert tokenizer.pad_token_id == 50256 and tokenizer.padding_side == "left"
    model = tiny_gpt_neo(vocab_size=len(tokenizer)).double()
    texts = [
        "The quick brown fox jumps over the lazy dog near the river bank today.",
        "Call me at 555-0134 or write to someone@example.org before noon.",
        "def add(a, b):\n    return a + b\n",
    ]
    seqs = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    assert len({len(s) for s in seqs}) == 3
    t0s = [len(s) // 2 for s in seqs]
    fast = memorization_scores(model, seqs, t0s, tokenizer.pad_token_id, n=2, batch_size=3)
    ref = memorization_scores_literal(model, seqs, t0s, tokenizer.pad_token_id, n=2)
    assert fast.extraction_likelihood == pytest.approx(ref.extraction_likelihood, abs=1e-6)
    assert fast.memorization_accuracy == pytest.approx(ref.memorization_accuracy, abs=1e-6)
    assert fast.generations == ref.generations


def test_model_own_greedy_path_is_fully_memorized():
    """A sequence that is the model's own greedy continuation: every next-token guess is
    right (MA = 1) and every continuation reproduces the rest (EL = 1)."""
    model = tiny_gpt_neo(vocab_size=40).double()
    seq = [5] + generate_continuations(model, [[5]], 30, pad_token_id=0)[0]
    scores = memorization_scores(model, [seq], [8], 0, n=4)
    assert scores.memorization_accuracy == [1.0]
    assert scores.extraction_likelihood == [1.0]
    assert scores.generations == [seq[8:]]


def test_too_short_for_n_is_a_usage_error():
    model = tiny_gpt_neo(vocab_size=40)
    with pytest.raises(UsageError, match="EL_10"):
        memorization_scores(model, [[1, 2, 3, 4, 5]], [2], 0, n=10)
    with pytest.raises(UsageError, match="prefix length"):
        memorization_scores(model, [[1, 2, 3]], [3], 0, n=1)


def test_eos_does_not_stop_decoding():
    """The tiny GPT-Neo's EOS is token 39; a sequence full of it is scored to the end."""
    model = tiny_gpt_neo(vocab_size=40).double()
    with torch.no_grad():
        model.lm_head.weight[39] += 5.0  # make EOS the likely next token
    seq = [3, 8, 1, 39, 39, 4, 39, 2, 7, 39, 5, 6]
    fast = memorization_scores(model, [seq], [4], 0, n=2)
    ref = memorization_scores_literal(model, [seq], [4], 0, n=2)
    assert len(fast.generations[0]) == len(seq) - 4
    assert fast.generations == ref.generations
    assert fast.extraction_likelihood == pytest.approx(ref.extraction_likelihood, abs=1e-9)


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_el_only_where_asked_keeps_every_other_score(family):
    """Sequences left out of `el_for` get EL None and decode from t0 only: their MA and
    generation, and every other sequence's EL, are the full scoring's."""
    model = TINY_MODELS[family](vocab_size=48).double()
    seqs = _semi_memorized(model, 48, [40, 33, 26, 40, 19, 31], seed=2)
    t0s = [12, 10, 8, 20, 6, 15]
    wanted = [True, False, False, True, False, True]
    full = memorization_scores(model, seqs, t0s, 0, n=4, batch_size=2)
    scored = memorization_pass(model, seqs, t0s, 0, batch_size=4)
    greedy, ma = scored.greedy, scored.ma
    lazy = memorization_scores(model, seqs, t0s, 0, n=4, batch_size=2, el_for=wanted, greedy=greedy)
    for i, w in enumerate(wanted):
        if w:
            assert lazy.extraction_likelihood[i] == full.extraction_likelihood[i]
        else:
            assert lazy.extraction_likelihood[i] is None
    assert lazy.memorization_accuracy == full.memorization_accuracy == ma
    assert lazy.generations == full.generations


def test_teacher_forced_suffix_nll_is_the_mean_of_the_suffix_token_logprobs():
    """Against the token log-probabilities of the engine's pass, one sequence a batch,
    averaged by hand over t >= t0; sequences of different lengths (padding) in one batch."""
    model = tiny_gpt_neo(vocab_size=40).double()
    seqs = [[3, 8, 1, 9, 4, 7, 2, 5, 6, 11], [4, 4, 12, 30, 2, 8], [1, 2, 3, 4, 5, 6, 7, 8]]
    t0s = [4, 2, 5]
    nll = memorization_pass(model, seqs, t0s, 0, batch_size=3, suffix_nll=True).suffix_nll
    logps = teacher_forced(model, seqs, 0, batch_size=1, token_logprobs=True).token_logprobs
    for seq, t0, lp, value in zip(seqs, t0s, logps, nll, strict=True):
        # log P(x_t | x_<t) for t = t0..T-1 is entry t - 1 of the teacher-forced row
        by_hand = -sum(float(lp[t - 1]) for t in range(t0, len(seq))) / (len(seq) - t0)
        assert value == pytest.approx(by_hand, abs=1e-9)


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_verified_drafts_give_plain_decoding_exactly(family):
    """Scoring with last scoring's continuations as drafts (the model nudged in between,
    as by an epoch's steps) gives the plain decoding's EL, MA and generations exactly and
    keeps the drafts current; so do wrong, short and missing drafts, and the literal
    path agrees with both."""
    vocab = 48
    model = TINY_MODELS[family](vocab_size=vocab, seed=2).double()
    seqs = _semi_memorized(model, vocab, [40, 33, 26, 40, 19, 31], seed=5)
    t0s = [12, 10, 8, 20, 6, 15]

    def score(drafts=None):
        return memorization_scores(
            model, seqs, t0s, 0, n=4, window=False, batch_size=4, decode_batch_size=7,
            drafts=drafts,
        )  # fmt: skip

    def current(drafts):
        """Every stored continuation is the model's greedy continuation of its prefix."""
        for seq, known in zip(seqs, drafts, strict=True):
            for q, cont in known.items():
                assert generate_continuations(model, [seq[:q]], len(seq) - q, 0)[0] == cont

    drafts = [{} for _ in seqs]
    first = score(drafts)
    assert first.generations == score().generations  # no draft yet: plain decoding
    assert all(drafts)
    current(drafts)
    torch.manual_seed(0)
    for _ in range(3):  # the model moves a little between scorings
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02 * p.std().nan_to_num(0.01))
        verified, plain = score(drafts), score()
        assert verified.extraction_likelihood == plain.extraction_likelihood
        assert verified.memorization_accuracy == plain.memorization_accuracy
        assert verified.generations == plain.generations
    current(drafts)
    literal = memorization_scores_literal(model, seqs, t0s, 0, n=4)
    assert plain.extraction_likelihood == pytest.approx(literal.extraction_likelihood, abs=1e-9)
    assert plain.generations == literal.generations
    # drafts that are wrong from their first token, wrong midway, too short, or missing
    rng = random.Random(7)
    bad = []
    for d in drafts:
        bad.append({})
        for q, cont in d.items():
            kind = rng.randrange(4)
            if kind == 0:
                bad[-1][q] = [rng.randrange(vocab) for _ in cont]
            elif kind == 1:
                cut = rng.randrange(len(cont))
                bad[-1][q] = cont[:cut] + [(t + 1) % vocab for t in cont[cut:]]
            elif kind == 2:
                bad[-1][q] = cont[: len(cont) // 2]
    wrong = score(bad)
    assert wrong.extraction_likelihood == plain.extraction_likelihood
    assert wrong.generations == plain.generations


def test_verification_decodes_only_past_the_first_disagreement(monkeypatch):
    """With drafts that hold, one pass verifies every row and no decoding step runs; a
    draft wrong from its j-th token costs the steps past j only."""
    import icu_unlearn.scoring as scoring

    vocab = 48
    model = tiny_gpt_neo(vocab_size=vocab, seed=2).double()
    seqs = _semi_memorized(model, vocab, [40, 36], seed=5)
    t0s = [12, 10]
    drafts = [{}, {}]
    memorization_scores(model, seqs, t0s, 0, n=4, drafts=drafts)
    steps = []
    real = scoring._decode

    def counting(model, row_cache, base, tok, positions, todo):
        steps.append(todo[0] if todo else 0)
        return real(model, row_cache, base, tok, positions, todo)

    monkeypatch.setattr(scoring, "_decode", counting)
    memorization_scores(model, seqs, t0s, 0, n=4, drafts=drafts)
    assert steps == []  # every draft held: nothing decoded
    q = max(drafts[0])
    cont = drafts[0][q]
    assert len(cont) >= 3
    drafts[0][q] = cont[:1] + [(cont[1] + 1) % vocab] + cont[2:]
    again = memorization_scores(model, seqs, t0s, 0, n=4, drafts=drafts)
    # the wrong token is replaced by the argmax and decoding goes on from there: the
    # row decodes len(cont) - 2 steps, not len(cont) - 1
    assert steps == [len(cont) - 2] and drafts[0][q] == cont
    assert again.generations[0] == memorization_scores(model, seqs, t0s, 0, n=4).generations[0]


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_the_reserved_decoding_cache_decodes_what_the_growing_one_does(family, monkeypatch):
    """EL's decoding writes each step into room reserved in the cache instead of letting
    transformers concatenate the whole cache every step: float32, rows leaving the batch
    as they finish, the same continuations and scores bit for bit."""
    import icu_unlearn.scoring as scoring

    model = TINY_MODELS[family](vocab_size=48, seed=6)
    seqs = _semi_memorized(model, 48, [40, 33, 26, 40, 19, 31], seed=8)
    t0s = [12, 10, 8, 20, 6, 15]

    def score():
        return memorization_scores(model, seqs, t0s, 0, n=4, batch_size=3, decode_batch_size=6)

    writes = []
    real_update = scoring._ReservedLayer.update

    def counted(self, *args, **kwargs):
        writes.append(self)
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(scoring._ReservedLayer, "update", counted)
    reserved = score()
    assert writes  # the decoding went through the reserved layers
    monkeypatch.setattr(scoring, "_reserve", lambda cache, room: cache)
    grown = score()
    assert reserved.generations == grown.generations
    assert reserved.extraction_likelihood == grown.extraction_likelihood
    assert reserved.memorization_accuracy == grown.memorization_accuracy
