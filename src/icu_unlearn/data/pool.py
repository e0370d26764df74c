"""The analogous pool D of CLE (paper §3.4): texts to embed, and token samples to learn.

Default: the lm-extraction train rows that are not in the forget set (the paper's
"remaining Pile subset"); `lm-extraction:train+preprefix` is the same rows with their
100-token pre-prefix in front (embedded and learned whole), the partner of a
`+preprefix` forget set. Or a .jsonl / .csv file with a `text` field.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..errors import UsageError
from ..models import gpt2_tokenizer
from .forget import ForgetSample, extraction_samples, read_jsonl
from .mirror import extraction_array


@dataclass
class AnalogousPool:
    texts: list[str]  # what the encoder embeds
    doc_ids: list[int] | None  # lm-extraction rows, when the pool is lm-extraction
    spec: str
    preprefix: bool = False  # lm-extraction rows with their pre-prefix (t0 = 150)

    def learn_sample(
        self, index: int, tokenizer, prefix_length: int, max_tokens: int, data_dir=None
    ) -> ForgetSample:
        """Pool row `index` as token ids split at t0, like a forget sample."""
        if self.doc_ids is not None:
            (sample,) = extraction_samples(
                [self.doc_ids[index]], tokenizer, data_dir, preprefix=self.preprefix
            )
            return ForgetSample(
                f"pool:{self.doc_ids[index]}",
                sample.prefix_ids,
                sample.suffix_ids,
                sample.prefix,
                sample.suffix,
            )
        ids = tokenizer(self.texts[index], add_special_tokens=False).input_ids[:max_tokens]
        cut = min(prefix_length, len(ids) - 1)
        return ForgetSample(
            f"pool:{index}",
            tuple(ids[:cut]),
            tuple(ids[cut:]),
            tokenizer.decode(ids[:cut]),
            tokenizer.decode(ids[cut:]),
        )


def load_pool(
    spec: str | None,
    forget: list[ForgetSample],
    tokenizer: PreTrainedTokenizerBase,
    limit: int | None = None,
    data_dir=None,
) -> AnalogousPool:
    if spec in (None, "lm-extraction:train", "lm-extraction:train+preprefix"):
        preprefix = spec == "lm-extraction:train+preprefix"
        prefixes = extraction_array("train", "prefix", data_dir)
        if preprefix:
            prefixes = np.concatenate(
                [extraction_array("train", "preprefix", data_dir), prefixes], axis=1
            )
        suffixes = extraction_array("train", "suffix", data_dir)
        excluded = {int(s.id) for s in forget if s.id.isdigit()}
        doc_ids = [i for i in range(len(prefixes)) if i not in excluded][:limit]
        gpt2 = gpt2_tokenizer()
        # the same text a forget sample of the same form embeds: prefix + suffix
        prefix_texts = gpt2.batch_decode(prefixes[doc_ids].tolist())
        suffix_texts = gpt2.batch_decode(suffixes[doc_ids].tolist())
        texts = [p + s for p, s in zip(prefix_texts, suffix_texts, strict=True)]
        return AnalogousPool(texts, doc_ids, spec or "lm-extraction:train", preprefix)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(
            f"analogous pool {spec!r} does not exist; give lm-extraction:train (or "
            "lm-extraction:train+preprefix), or a .jsonl/.csv file with a text field"
        )
    texts = _read_texts(path)[:limit]
    if not texts:
        raise UsageError(f"analogous pool {spec!r} has no texts")
    return AnalogousPool(texts, None, spec)


def _read_texts(path: Path) -> list[str]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "text" not in reader.fieldnames:
                raise UsageError(f"analogous pool {path} needs a text column")
            return [row["text"] for row in reader if row["text"].strip()]
    if path.suffix == ".jsonl":
        texts = []
        for where, row in read_jsonl(path):
            if not isinstance(row.get("text"), str):
                raise UsageError(f'{where}: needs a string field "text"')
            texts.append(row["text"])
        return texts
    raise UsageError(f"analogous pool {path} must be a .jsonl or .csv file")
