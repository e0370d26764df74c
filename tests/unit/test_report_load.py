"""A report reads ended runs only: a killed or interrupted run is named, not drawn."""

from __future__ import annotations

import json

import pytest

from icu_unlearn.errors import UsageError
from icu_unlearn.report import load_run


@pytest.mark.parametrize("status", ["running", "interrupted"])
def test_an_unfinished_run_is_refused_with_its_folder(tmp_path, status):
    (tmp_path / "manifest.json").write_text(json.dumps({"status": status}))
    with pytest.raises(UsageError, match=f"{tmp_path} is an unfinished run"):
        load_run(tmp_path)


def test_an_ended_run_is_read_with_its_logs(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "incomplete", "epochs": 2}))
    (tmp_path / "epochs.jsonl").write_text('{"epoch": 1}\n\n{"epoch": 2}\n')
    run = load_run(tmp_path)
    assert run.manifest["status"] == "incomplete" and [e["epoch"] for e in run.epochs] == [1, 2]
    assert run.samples == []  # no samples.jsonl: none


def test_a_folder_without_a_manifest_is_not_a_run(tmp_path):
    with pytest.raises(UsageError, match="is not a run directory"):
        load_run(tmp_path)
