"""Redaction: the text a user asked to forget (prefix, suffix, the model's generations of
it) replaced by a hash, so outputs can be shared and audited without repeating it."""

from __future__ import annotations

import hashlib

# Row fields that hold forgotten text or text generated from it ("reference": the true
# suffix's field name in runs written before it was renamed "true_suffix").
TEXT_FIELDS = (
    "prefix", "true_suffix", "reference", "generation", "reference_generation", "iur_generation",
    "judge_reply",
)  # fmt: skip


def redact_text(text: str) -> str:
    return "[redacted sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16] + "]"


def redact_row(row: dict) -> dict:
    return {
        k: redact_text(v) if k in TEXT_FIELDS and isinstance(v, str) else v for k, v in row.items()
    }
