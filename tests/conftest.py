"""Shared fixtures: tiny random causal LMs built from configs, the offline data mirror."""

from __future__ import annotations

import os
from pathlib import Path

# Tiny models gain nothing from threads, and two busy processes with two threads each on a
# 2-core machine run several times slower (measured: 2.8 s -> 25 s for one EL pass).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ICU_DATA_DIR", ROOT.parent / "shared" / "data"))
os.environ.setdefault("ICU_DATA_DIR", str(DATA_DIR))


def tiny_gpt_neo(vocab_size: int = 64, seed: int = 0) -> GPTNeoForCausalLM:
    torch.manual_seed(seed)
    config = GPTNeoConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        max_position_embeddings=512,
        window_size=256,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
    )
    return GPTNeoForCausalLM(config).eval()


def tiny_llama(vocab_size: int = 64, seed: int = 0, **config_overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    return LlamaForCausalLM(LlamaConfig(**config | config_overrides)).eval()


TINY_MODELS = {"gpt-neo": tiny_gpt_neo, "llama": tiny_llama}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "lm_extraction_benchmark").exists():
        pytest.skip(f"no offline data mirror at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture()
def gpt2():
    """A fresh GPT-2 tokenizer per test: code under test may give it a pad token."""
    from icu_unlearn.models import gpt2_tokenizer

    return gpt2_tokenizer()
