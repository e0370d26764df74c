"""The planted tiny scenario, shared by every integration module that needs a model
that memorized something. Planting takes a while: once per test session, whatever the
number of xdist workers (the first worker to need it plants it under a lock in the
session's shared temporary folder; the others wait for it or find it there)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from icu_unlearn.models import gpt2_tokenizer
from tests.integration.test_eval_cli import call_cli
from tests.scenario import write_scenario


def _plant(root: Path, data_dir) -> dict[str, Path]:
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


@pytest.fixture(scope="session")
def scenario(tmp_path_factory, data_dir, worker_id):
    if worker_id == "master":  # no xdist: this process alone
        return _plant(tmp_path_factory.mktemp("planted-scenario"), data_dir)
    # the workers' base folders share a parent that belongs to this session
    shared = tmp_path_factory.getbasetemp().parent
    root, index = shared / "planted-scenario", shared / "planted-scenario.json"
    with FileLock(str(shared / "planted-scenario.lock")):
        if not index.is_file():  # written last: a worker that failed half-way left none
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            paths = _plant(root, data_dir)
            index.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return {k: Path(v) for k, v in json.loads(index.read_text()).items()}
