"""benchmarks/gpu_check.py --tiny: the GPU check's every step, on a tiny model on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_gpu_check_tiny_plants_unlearns_and_compares_the_el_paths(tmp_path):
    out = tmp_path / "check.json"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    (tiny,) = result["models"].values()
    assert tiny["plant"]["reached_ma_0.95"] and tiny["plant"]["peak_gpu_gib"] is None  # CPU
    paths = tiny["el_paths"]
    # on memorized text the fast path gives the literal one's every EL, MA and generation
    assert paths["sequences_identical"] == paths["sequences"] == 8
    assert paths["max_el_difference"] == 0.0 and paths["mean_el"] > 0.9
    assert paths["fast"]["seconds"] < paths["literal"]["seconds"]
    fp32 = tiny["unlearn_fp32"]
    assert fp32["epochs"] == 2 and fp32["forget_tokens_per_second"] > 0
    bf16 = tiny["unlearn_bf16"]
    if result["precision_available"]:
        assert bf16["epochs"] == 2
    else:
        assert bf16 == {"skipped": "precision not available"}
