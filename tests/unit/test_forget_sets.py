"""Forget-set specs: the offline mirror, the three JSONL forms, the published CSV, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from icu_unlearn.data.forget import load_forget_set
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
        ([{"id": 1, "text": "just three words"}], "not more than the prefix length"),
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
