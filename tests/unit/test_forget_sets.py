"""Forget-set specs: the offline mirror (with and without pre-prefix), Pile validation text,
the three JSONL forms, the published CSV, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from icu_unlearn.data.forget import load_forget_set, text_split
from icu_unlearn.data.pool import load_pool
from icu_unlearn.errors import UsageError
from icu_unlearn.metrics.similarity import default_bertscore_model


def _arrays(data_dir):
    base = data_dir / "lm_extraction_benchmark"
    return np.load(base / "train_prefix.npy"), np.load(base / "train_suffix.npy")


def test_published_set_returns_the_arrays_rows(data_dir, gpt2):
    """GPT-2's vocabulary: the ids are the arrays' rows for the CSV's doc_ids, unchanged."""
    samples = load_forget_set("lm-extraction:32_0", gpt2, data_dir=data_dir)
    with open(data_dir / "unlearning_targets/lm_extraction_32_0.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [s.id for s in samples] == [r["doc_id"] for r in rows]
    prefix, suffix = _arrays(data_dir)
    for s, row in zip(samples, rows, strict=True):
        doc = int(row["doc_id"])
        assert list(s.prefix_ids) == prefix[doc].tolist()
        assert list(s.suffix_ids) == suffix[doc].tolist()
        # the published text is the 200-token excerpt; prefix + suffix are its last 100 tokens
        assert (s.prefix + s.suffix).replace("\r\n", "\n") in row["text"].replace("\r\n", "\n")


def test_ids_spec_and_known_doc(data_dir, gpt2):
    prefix, suffix = _arrays(data_dir)
    samples = load_forget_set("lm-extraction:ids=3, 17", gpt2, data_dir=data_dir)
    assert [s.id for s in samples] == ["3", "17"]
    assert list(samples[1].prefix_ids) == prefix[17].tolist()
    assert samples[1].suffix == gpt2.decode(suffix[17].tolist())


def test_other_vocabulary_is_re_encoded_at_the_boundary(data_dir, gpt2):
    """A BERT word-piece tokenizer: prefix and suffix texts re-encoded separately."""
    bert = AutoTokenizer.from_pretrained(default_bertscore_model())
    prefix, suffix = _arrays(data_dir)
    (s,) = load_forget_set("lm-extraction:ids=101", bert, data_dir=data_dir)
    assert s.prefix == gpt2.decode(prefix[101].tolist())
    assert list(s.prefix_ids) == bert(s.prefix, add_special_tokens=False).input_ids
    assert list(s.suffix_ids) == bert(s.suffix, add_special_tokens=False).input_ids
    assert s.input_ids == [*s.prefix_ids, *s.suffix_ids]


def _preprefix(data_dir):
    return np.load(data_dir / "lm_extraction_benchmark" / "train_preprefix.npy")


def test_preprefix_sets_are_the_whole_200_token_excerpt(data_dir, gpt2):
    """+preprefix: prefix = the row's 100-token pre-prefix + its 50-token prefix (t0 = 150),
    suffix unchanged; decoded, the published CSV text (which the tokenizer's old
    clean-up decoded with some spaces before punctuation dropped: compare without spaces)."""
    samples = load_forget_set("lm-extraction:32_0+preprefix", gpt2, data_dir=data_dir)
    plain = load_forget_set("lm-extraction:32_0", gpt2, data_dir=data_dir)
    with open(data_dir / "unlearning_targets/lm_extraction_32_0.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    prefix, suffix = _arrays(data_dir)
    preprefix = _preprefix(data_dir)
    assert [s.id for s in samples] == [s.id for s in plain]  # doc ids: the pool still excludes them
    for s, p, row in zip(samples, plain, rows, strict=True):
        doc = int(row["doc_id"])
        assert list(s.prefix_ids) == preprefix[doc].tolist() + prefix[doc].tolist()
        assert s.prefix_length == 150 and s.suffix_ids == p.suffix_ids
        assert s.prefix.endswith(p.prefix)
        assert "".join((s.prefix + s.suffix).split()) == "".join(row["text"].split())
    (one,) = load_forget_set("lm-extraction:ids=17+preprefix", gpt2, data_dir=data_dir)
    assert list(one.prefix_ids) == preprefix[17].tolist() + prefix[17].tolist()
    assert list(one.suffix_ids) == suffix[17].tolist()


def test_preprefix_with_another_vocabulary_re_encodes_the_whole_prefix(data_dir, gpt2):
    bert = AutoTokenizer.from_pretrained(default_bertscore_model())
    prefix, suffix = _arrays(data_dir)
    (s,) = load_forget_set("lm-extraction:ids=101+preprefix", bert, data_dir=data_dir)
    assert s.prefix == gpt2.decode(_preprefix(data_dir)[101].tolist() + prefix[101].tolist())
    assert list(s.prefix_ids) == bert(s.prefix, add_special_tokens=False).input_ids
    assert s.suffix == gpt2.decode(suffix[101].tolist())


def test_the_pool_partner_of_a_preprefix_set(data_dir, gpt2):
    """lm-extraction:train+preprefix: texts and learn samples carry the pre-prefix too."""
    forget = load_forget_set("lm-extraction:ids=0,2+preprefix", gpt2, data_dir=data_dir)
    pool = load_pool("lm-extraction:train+preprefix", forget, gpt2, limit=3, data_dir=data_dir)
    assert pool.doc_ids == [1, 3, 4] and pool.spec == "lm-extraction:train+preprefix"
    (row,) = load_forget_set("lm-extraction:ids=3+preprefix", gpt2, data_dir=data_dir)
    assert pool.texts[1] == row.prefix + row.suffix
    learn = pool.learn_sample(1, gpt2, 50, 100, data_dir)
    assert (learn.id, learn.prefix_ids, learn.suffix_ids) == (
        "pool:3",
        row.prefix_ids,
        row.suffix_ids,
    )
    plain = load_pool(None, forget, gpt2, limit=3, data_dir=data_dir)
    assert plain.doc_ids == [1, 3, 4] and plain.learn_sample(1, gpt2, 50, 100).prefix_length == 50


def _word_tokenizer(words):
    vocab = {w: i for i, w in enumerate(["<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_pile_validation_spec_on_a_tiny_tokenizer(tmp_path):
    """One token per word: rows 0 and 2 are too short for t0 + 50 = 53 tokens, rows 1, 3
    and 4 long enough; each is cut to 3 + 50 tokens, its id is its row."""
    words = [f"w{i}" for i in range(60)]
    lengths = [40, 60, 52, 53, 58]
    (tmp_path / "eval").mkdir()
    with open(tmp_path / "eval" / "pile.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["doc_id", "text", "corpus"])
        for row, n in enumerate(lengths):
            writer.writerow([1000 + row, "\n".join(words[:n]), "Pile-CC"])
    tok = _word_tokenizer(words)
    samples = load_forget_set("pile-validation:2", tok, prefix_length=3, data_dir=tmp_path)
    assert [s.id for s in samples] == ["pile-val:1", "pile-val:3"]
    for s in samples:
        assert list(s.prefix_ids) == [1, 2, 3]  # w0 w1 w2
        assert list(s.suffix_ids) == list(range(4, 54))
        assert s.prefix == "w0 w1 w2" and s.suffix.split()[-1] == "w52"
    assert len(load_forget_set("pile-validation:3", tok, 3, tmp_path)) == 3
    with pytest.raises(UsageError, match="only 3 texts of at least 53 tokens"):
        load_forget_set("pile-validation:4", tok, prefix_length=3, data_dir=tmp_path)
    with pytest.raises(UsageError, match="at least 1"):
        load_forget_set("pile-validation:0", tok, prefix_length=3, data_dir=tmp_path)


def test_pile_validation_spec_on_the_mirror(data_dir, gpt2):
    with open(data_dir / "eval" / "pile.csv", newline="", encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    samples = load_forget_set("pile-validation:32", gpt2, data_dir=data_dir)
    assert len(samples) == 32 and len({s.id for s in samples}) == 32
    for s in samples:
        assert (len(s.prefix_ids), len(s.suffix_ids)) == (50, 50)
        text = texts[int(s.id.removeprefix("pile-val:"))]
        assert list(s.input_ids) == gpt2(text).input_ids[:100]
        assert text.startswith(s.prefix + s.suffix)


def _jsonl(tmp_path, rows, name="f.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_jsonl_three_forms(tmp_path, gpt2):
    path = _jsonl(
        tmp_path,
        [
            {"id": "a", "prefix": "My phone number is", "suffix": " 555 0134."},
            {"id": "b", "text": "one two three four five six seven"},
            {"id": "c", "prefix_ids": [1, 2, 3], "suffix_ids": [4, 5]},
        ],
    )
    a, b, c = load_forget_set(path, gpt2, prefix_length=3)
    assert list(a.prefix_ids) == gpt2("My phone number is").input_ids
    assert list(a.suffix_ids) == gpt2(" 555 0134.").input_ids
    ids = gpt2("one two three four five six seven").input_ids
    assert list(b.prefix_ids) == ids[:3] and list(b.suffix_ids) == ids[3:]
    assert c.prefix_ids == (1, 2, 3) and c.suffix_ids == (4, 5) and c.prefix_length == 3


# A made-up customer record of exactly 60 GPT-2 tokens (the test checks the count).
RECORD = (
    "Customer record 4471: Maria Keller, born 1984-07-02, phone +49 30 5550 1873, e-mail "
    "maria.keller@example.org, address Lindenstrasse 12, 10969 Berlin; account opened "
    "2019-03-14 in Berlin Mitte."
)


def test_a_short_text_is_split_in_the_middle(tmp_path, gpt2):
    """60 tokens at prefix_length 50: a cut at 50 would test " 2019-03-14 in Berlin Mitte."
    only, with the name, phone, e-mail and address in the prompt; under 2 x 50 tokens the
    cut is at 60 // 2 = 30, and the tested part is "keller@example.org, address ... Mitte.",
    half of the record's tokens."""
    ids = gpt2(RECORD).input_ids
    assert len(ids) == 60
    (record,) = load_forget_set(_jsonl(tmp_path, [{"id": "r", "text": RECORD}]), gpt2, 50)
    assert record.prefix_length == 30 and len(record.suffix_ids) == 30
    assert list(record.input_ids) == ids
    assert len(record.suffix_ids) >= len(record.prefix_ids)  # the tested part: the larger
    assert "example.org" in record.suffix and "10969 Berlin" in record.suffix


@pytest.mark.parametrize(
    "num_tokens, prefix_length, prompt",
    [(60, 50, 30), (61, 50, 30), (99, 50, 49), (100, 50, 50), (250, 50, 50), (2, 50, 1), (7, 3, 3)],
)
def test_text_split(num_tokens, prefix_length, prompt):
    """prefix_length from 2 x prefix_length tokens on; below, the rounded-down half."""
    assert text_split(num_tokens, prefix_length) == prompt


def test_csv_file_form(tmp_path, data_dir, gpt2):
    path = tmp_path / "mine.csv"
    path.write_text('doc_id,corpus,text\n42,pile-cc,"ignored"\n7,github,"ignored"\n')
    samples = load_forget_set(str(path), gpt2, data_dir=data_dir)
    prefix, _ = _arrays(data_dir)
    assert [s.id for s in samples] == ["42", "7"]
    assert list(samples[0].prefix_ids) == prefix[42].tolist()


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"prefix": "a", "suffix": "b"}], 'missing field "id"'),
        ([{"id": 1, "prefix": "a"}], 'missing field "suffix"'),
        ([], "is empty"),
        (["{not json"], "not valid JSON"),
        ([{"id": 1, "prefix": "hello there", "suffix": ""}], "empty suffix"),
        ([{"id": 1, "text": "hello"}], "has 1 token"),
        ([{"id": 1, "prefix_ids": [1], "suffix_ids": [2]}] * 2, "twice"),
        ([{"id": 1, "prefix_ids": [1], "suffix_ids": [99999]}], "outside the vocabulary"),
        ([{"id": 1, "prefix_ids": [1], "suffix_ids": ["x"]}], "list of integer"),
        ([{"id": 1, "body": "x"}], 'needs "prefix" and "suffix"'),
    ],
)
def test_bad_jsonl_is_a_usage_error(tmp_path, gpt2, rows, message):
    with pytest.raises(UsageError, match=message):
        load_forget_set(_jsonl(tmp_path, rows), gpt2, prefix_length=50)


def test_bad_specs(tmp_path, data_dir, gpt2):
    with pytest.raises(UsageError, match="unknown lm-extraction doc_id 15000"):
        load_forget_set("lm-extraction:ids=1,15000", gpt2, data_dir=data_dir)
    with pytest.raises(UsageError, match="lm_extraction_7_9.csv is not in the data directory"):
        load_forget_set("lm-extraction:7_9", gpt2, data_dir=data_dir)
    with pytest.raises(UsageError, match="does not exist"):
        load_forget_set(str(tmp_path / "nope.jsonl"), gpt2)
    with pytest.raises(UsageError, match="unknown forget set"):
        load_forget_set("forget-me.txt", gpt2)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,text\n1,hello\n")
    with pytest.raises(UsageError, match="needs doc_id"):
        load_forget_set(str(wrong), gpt2, data_dir=data_dir)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UsageError, match="is empty"):
        load_forget_set(str(empty), gpt2, data_dir=data_dir)
