"""Atomic writes publish whole files with ordinary permissions (not mkstemp's private 0600)."""

from __future__ import annotations

import os

from icu_unlearn.io import atomic_write_json, temp_dir


def test_atomic_files_and_temp_dirs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        folder = temp_dir(tmp_path, ".model-")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
