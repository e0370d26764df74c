"""The planted tiny scenario, shared by every integration module that needs a model
that memorized something (planting takes a while, so once per session)."""

from __future__ import annotations

import json

import pytest

from icu_unlearn.models import gpt2_tokenizer
from tests.integration.test_eval_cli import call_cli
from tests.scenario import write_scenario


@pytest.fixture(scope="session")
def scenario(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("planted-scenario")
    paths = write_scenario(root, data_dir, gpt2_tokenizer())
    planting = root / "planting"  # a run directory: the planted model is its model/
    proc = call_cli(
        "memorize",
        "--model",
        str(paths["base"]),
        "--forget",
        str(paths["planted"]),
        "--out",
        str(planting),
        "--lr",
        "1e-2",
        "--max-epochs",
        "200",
        "--batch-size",
        "12",
        "--prefix-length",
        "20",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((planting / "memorize.json").read_text())
    paths["planted_model"] = planting / "model"
    assert report["reached"] and min(report["ma"].values()) >= 0.9
    return paths
