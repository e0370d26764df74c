"""Forget sets: the samples a model must forget, as prefix and suffix token ids.

Specs (DESIGN.md §4):
  lm-extraction:128_0          a published forget set (N_run)
  lm-extraction:ids=3,17,...   rows of the lm-extraction train arrays
  ...+preprefix                either of those with the rows' 100-token pre-prefix in
                               front of the prefix: the whole 200-token excerpt, as the
                               authors' code trained and scored it (t0 = 150)
  pile-validation:32           the first 32 Pile validation texts (eval/pile.csv) with
                               at least t0 + 50 tokens, cut to t0 + 50 (text the model
                               cannot have trained on, when it trained on the Pile train split)
  FILE.jsonl                   {"id","prefix","suffix"} | {"id","text"} | {"id","prefix_ids","suffix_ids"}
  FILE.csv                     the published doc_id,corpus,text form (doc_id = train row)

A {"id","text"} record is split where the model is prompted and what it must not
reproduce begins (`text_split`): after prefix_length tokens, or in the middle (the
first n // 2 of its n tokens are the prompt) when the text is shorter than twice
prefix_length, so that the tested part always holds at least half of the record and
not only its last few tokens.

Text is tokenized as tokenize(prefix) + tokenize(suffix) without special tokens.
lm-extraction rows are GPT-2 ids: a model with GPT-2's vocabulary uses them as
they are; any other model gets prefix and suffix decoded with GPT-2's tokenizer
and re-encoded with its own, separately, so the boundary is kept.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from ..errors import UsageError
from ..models import gpt2_tokenizer
from .mirror import data_file, extraction_array

SPEC_FORMS = (
    "lm-extraction:N_run (e.g. lm-extraction:32_0), lm-extraction:ids=3,17 (either with "
    "+preprefix), pile-validation:N (e.g. pile-validation:32), a .jsonl file or a .csv file"
)

# Tokens after t0 in a lm-extraction row, and so in a pile-validation sample too.
SUFFIX_LENGTH = 50


@dataclass(frozen=True)
class ForgetSample:
    id: str
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    prefix: str
    suffix: str

    @property
    def input_ids(self) -> list[int]:
        return [*self.prefix_ids, *self.suffix_ids]

    @property
    def prefix_length(self) -> int:
        return len(self.prefix_ids)

    def content_hash(self) -> str:
        """sha256 of the token ids: identifies the sample without revealing it."""
        data = json.dumps([list(self.prefix_ids), list(self.suffix_ids)]).encode()
        return hashlib.sha256(data).hexdigest()


def load_forget_set(
    spec: str,
    tokenizer: PreTrainedTokenizerBase,
    prefix_length: int = 50,
    data_dir: str | Path | None = None,
    vocab_size: int | None = None,
) -> list[ForgetSample]:
    """Parse a forget-set spec into samples; every problem is a one-line UsageError."""
    vocab_size = vocab_size or len(tokenizer)
    if match := re.fullmatch(r"lm-extraction:(\d+)_(\d+)(\+preprefix)?", spec):
        n, run, preprefix = match.groups()
        path = data_file(f"unlearning_targets/lm_extraction_{n}_{run}.csv", data_dir)
        samples = _from_published_csv(path, tokenizer, data_dir, bool(preprefix))
    elif match := re.fullmatch(r"lm-extraction:ids=([\d,\s-]+)(\+preprefix)?", spec):
        ids, preprefix = match.groups()
        samples = extraction_samples(parse_ids(ids), tokenizer, data_dir, preprefix=bool(preprefix))
    elif match := re.fullmatch(r"pile-validation:(\d+)", spec):
        samples = pile_validation_samples(int(match.group(1)), tokenizer, prefix_length, data_dir)
    elif spec.endswith((".jsonl", ".csv")):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UsageError(f"forget file {spec!r} does not exist")
        if spec.endswith(".csv"):
            samples = _from_published_csv(path, tokenizer, data_dir)
        else:
            samples = _from_jsonl(path, tokenizer, prefix_length)
    else:
        raise UsageError(f"unknown forget set {spec!r}; give {SPEC_FORMS}")
    _validate(samples, spec, vocab_size)
    return samples


def parse_ids(text: str) -> list[int]:
    """ "3,17,100-103" -> [3, 17, 100, 101, 102, 103] (ranges inclusive)."""
    ids: list[int] = []
    for part in text.replace(" ", "").split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            if not lo or not hi or int(hi) < int(lo):
                raise UsageError(f"bad id range {part!r}; write it as low-high, e.g. 100-131")
            ids += range(int(lo), int(hi) + 1)
        elif part:
            ids.append(int(part))
    return ids


def extraction_samples(
    doc_ids: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    data_dir: str | Path | None = None,
    split: str = "train",
    preprefix: bool = False,
) -> list[ForgetSample]:
    """Rows of the lm-extraction arrays (prefix + suffix, 50 + 50 GPT-2 tokens).

    With `preprefix`, the prefix is the row's 100-token pre-prefix followed by its
    prefix (150 + 50 tokens): the whole excerpt, which is what the authors' code
    trained on and scored, and what the thresholds 0.0499 / 0.5994 were set on.
    """
    prefixes = extraction_array(split, "prefix", data_dir)
    suffixes = extraction_array(split, "suffix", data_dir)
    contexts = extraction_array(split, "preprefix", data_dir) if preprefix else None
    for doc_id in doc_ids:
        if not 0 <= doc_id < len(prefixes):
            raise UsageError(
                f"unknown lm-extraction doc_id {doc_id}; the {split} set has rows 0 to "
                f"{len(prefixes) - 1}"
            )
    gpt2 = gpt2_tokenizer()
    same_vocab = tokenizer.get_vocab() == gpt2.get_vocab()
    samples = []
    for doc_id in doc_ids:
        prefix_gpt2 = [int(t) for t in prefixes[doc_id]]
        if contexts is not None:
            # decoded together: a character may span the pre-prefix/prefix boundary
            prefix_gpt2 = [int(t) for t in contexts[doc_id]] + prefix_gpt2
        suffix_gpt2 = [int(t) for t in suffixes[doc_id]]
        prefix, suffix = gpt2.decode(prefix_gpt2), gpt2.decode(suffix_gpt2)
        if same_vocab:
            prefix_ids, suffix_ids = prefix_gpt2, suffix_gpt2
        else:
            prefix_ids = tokenizer(prefix, add_special_tokens=False).input_ids
            suffix_ids = tokenizer(suffix, add_special_tokens=False).input_ids
        samples.append(
            ForgetSample(str(doc_id), tuple(prefix_ids), tuple(suffix_ids), prefix, suffix)
        )
    return samples


def pile_validation_samples(
    n: int,
    tokenizer: PreTrainedTokenizerBase,
    prefix_length: int = 50,
    data_dir: str | Path | None = None,
) -> list[ForgetSample]:
    """The first `n` texts of eval/pile.csv with at least t0 + 50 tokens of `tokenizer`,
    each cut to its first t0 tokens (prefix) and the next 50 (suffix).

    The file holds 1,500 excerpts of the Pile's validation split (the knowledge-
    unlearning work's utility set): a model trained on the Pile's training split
    never saw them, so they measure its EL and MA on unseen text. Ids are
    `pile-val:<row>`, the 0-based row of the file.
    """
    if n < 1:
        raise UsageError("pile-validation:N needs N of at least 1, e.g. pile-validation:32")
    needed = prefix_length + SUFFIX_LENGTH
    path = data_file("eval/pile.csv", data_dir)
    samples = []
    with path.open(newline="", encoding="utf-8") as f:
        for row, record in enumerate(csv.DictReader(f)):
            ids = tokenizer(record["text"], add_special_tokens=False).input_ids
            if len(ids) < needed:
                continue
            prefix_ids, suffix_ids = ids[:prefix_length], ids[prefix_length:needed]
            samples.append(
                ForgetSample(
                    f"pile-val:{row}",
                    tuple(prefix_ids),
                    tuple(suffix_ids),
                    tokenizer.decode(prefix_ids),
                    tokenizer.decode(suffix_ids),
                )
            )
            if len(samples) == n:
                return samples
    raise UsageError(
        f"{path} has only {len(samples)} texts of at least {needed} tokens "
        f"(prefix_length {prefix_length} + {SUFFIX_LENGTH}); ask for pile-validation:"
        f"{len(samples)} or fewer, or give a smaller prefix_length"
    )


def _from_published_csv(
    path: Path, tokenizer, data_dir, preprefix: bool = False
) -> list[ForgetSample]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise UsageError(f"forget file {path} is empty; it needs a doc_id,corpus,text header")
        if "doc_id" not in reader.fieldnames:
            raise UsageError(
                f"forget file {path} has columns {','.join(reader.fieldnames)} but needs "
                "doc_id (the published doc_id,corpus,text form)"
            )
        rows = list(reader)
    if not rows:
        raise UsageError(f"forget file {path} has a header but no samples")
    doc_ids = []
    for line, row in enumerate(rows, start=2):
        try:
            doc_ids.append(int(row["doc_id"]))
        except (TypeError, ValueError):
            raise UsageError(f"{path}:{line}: doc_id {row['doc_id']!r} is not an integer") from None
    return extraction_samples(doc_ids, tokenizer, data_dir, preprefix=preprefix)


def read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, object) for each non-blank line; bad JSON is a UsageError naming the line."""
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{line_no}: each line must be a JSON object")
        yield f"{path}:{line_no}", row


def _from_jsonl(path: Path, tokenizer, prefix_length: int) -> list[ForgetSample]:
    samples = [
        _jsonl_sample(row, where, tokenizer, prefix_length) for where, row in read_jsonl(path)
    ]
    if not samples:
        raise UsageError(f"forget file {path} is empty; give one JSON object per line")
    return samples


def _jsonl_sample(row: dict, where: str, tokenizer, prefix_length: int) -> ForgetSample:
    if "id" not in row:
        raise UsageError(f'{where}: missing field "id"')
    sample_id = str(row["id"])
    if "prefix_ids" in row or "suffix_ids" in row:
        prefix_ids = _token_ids(row, "prefix_ids", where)
        suffix_ids = _token_ids(row, "suffix_ids", where)
        prefix = tokenizer.decode(prefix_ids)
        suffix = tokenizer.decode(suffix_ids)
    elif "prefix" in row or "suffix" in row:
        prefix, suffix = _text(row, "prefix", where), _text(row, "suffix", where)
        prefix_ids = tokenizer(prefix, add_special_tokens=False).input_ids
        suffix_ids = tokenizer(suffix, add_special_tokens=False).input_ids
    elif "text" in row:
        ids = tokenizer(_text(row, "text", where), add_special_tokens=False).input_ids
        if len(ids) < 2:
            raise UsageError(
                f"{where}: the text has {len(ids)} token(s); it needs at least 2, a prompt "
                "and a part to test"
            )
        cut = text_split(len(ids), prefix_length)
        prefix_ids, suffix_ids = ids[:cut], ids[cut:]
        prefix, suffix = tokenizer.decode(prefix_ids), tokenizer.decode(suffix_ids)
    else:
        raise UsageError(
            f'{where}: needs "prefix" and "suffix", or "text", or "prefix_ids" and "suffix_ids"'
        )
    return ForgetSample(sample_id, tuple(prefix_ids), tuple(suffix_ids), prefix, suffix)


def text_split(num_tokens: int, prefix_length: int) -> int:
    """How many of a {"id","text"} record's tokens are the prompt: prefix_length, or half
    the text (rounded down) when it has fewer than 2 * prefix_length tokens. A fixed
    prefix_length alone would test a 60-token record only on its last 10 tokens at the
    default 50, leaving what matters (a name, a phone number) in the prompt, unchecked."""
    return prefix_length if num_tokens >= 2 * prefix_length else num_tokens // 2


def _text(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise UsageError(f'{where}: missing field "{key}"')
    if not isinstance(row[key], str):
        raise UsageError(f'{where}: field "{key}" must be a string')
    return row[key]


def _token_ids(row: dict, key: str, where: str) -> list[int]:
    if key not in row:
        raise UsageError(f'{where}: missing field "{key}"')
    ids = row[key]
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
        raise UsageError(f'{where}: field "{key}" must be a list of integer token ids')
    return ids


def _validate(samples: list[ForgetSample], spec: str, vocab_size: int) -> None:
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise UsageError(f"forget set {spec!r} has the id {s.id!r} twice; ids must be unique")
        seen.add(s.id)
        if not s.prefix_ids:
            raise UsageError(f"sample {s.id!r} of {spec!r} has an empty prefix")
        if not s.suffix_ids:
            raise UsageError(
                f"sample {s.id!r} of {spec!r} has an empty suffix: the prefix is the whole "
                "sequence; give a shorter prefix"
            )
        bad = [t for t in (*s.prefix_ids, *s.suffix_ids) if not 0 <= t < vocab_size]
        if bad:
            raise UsageError(
                f"sample {s.id!r} of {spec!r} has token id {bad[0]} outside the vocabulary "
                f"(0 to {vocab_size - 1}); were the ids made with another tokenizer?"
            )
