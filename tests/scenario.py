"""The tiny memorization scenario shared by the engine and method tests.

A tiny Llama with GPT-2's tokenizer; twelve 40-token lm-extraction excerpts
(20 + 20 GPT-2 tokens) to plant; a pool of other excerpts to pair with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.conftest import tiny_llama

PLANTED_IDS = list(range(100, 112))
FORGET_IDS = PLANTED_IDS[:4]  # a third of them
POOL_IDS = list(range(200, 260))
HELDOUT_IDS = list(range(300, 316))  # never planted, never pooled: for perplexity


def write_scenario(root: Path, data_dir: Path, gpt2) -> dict[str, Path]:
    base = data_dir / "lm_extraction_benchmark"
    prefix, suffix = np.load(base / "train_prefix.npy"), np.load(base / "train_suffix.npy")

    def rows(ids):
        return [
            {
                "id": str(i),
                "prefix_ids": prefix[i][:20].tolist(),
                "suffix_ids": suffix[i][:20].tolist(),
            }
            for i in ids
        ]

    names = ("planted", "forget", "retained", "heldout", "pool")
    paths = {name: root / f"{name}.jsonl" for name in names}
    for name, ids in (
        ("planted", PLANTED_IDS),
        ("forget", FORGET_IDS),
        ("retained", PLANTED_IDS[4:]),
        ("heldout", HELDOUT_IDS),
    ):
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows(ids)))
    pool = [
        {"text": gpt2.decode(prefix[i][:20].tolist() + suffix[i][:20].tolist())} for i in POOL_IDS
    ]
    paths["pool"].write_text("".join(json.dumps(r) + "\n" for r in pool))
    model = tiny_llama(
        len(gpt2),
        hidden_size=64,
        intermediate_size=128,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=gpt2.eos_token_id,
        eos_token_id=gpt2.eos_token_id,
        pad_token_id=None,
    )
    paths["base"] = root / "base"
    model.save_pretrained(paths["base"])
    gpt2.save_pretrained(paths["base"])
    return paths
