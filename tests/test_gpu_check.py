"""The GPU check script runs unchanged on a machine without CUDA (smoke sizes).

So benchmarks/gpu_check.sh cannot rot before a GPU session runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from darnn import fused

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_without_a_gpu(tmp_path: Path) -> None:
    env = {**os.environ, "QUICK": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {"device", "tests", "speed", "train_one_epoch"} <= set(summary)
    runs = [(r["config"], r["kernel"]) for r in summary["speed"]["results"]]
    assert runs == [("A", "torch"), ("A", "auto"), ("B", "torch"), ("B", "auto")]
    # On the CPU, A's CSR couplings run the fused kernel under "auto" (darnn.fused), where a
    # C compiler can build it.
    expected = "fused" if fused.library() is not None else "torch"
    assert summary["speed"]["results"][1]["kernel_used"]["train"] == expected
    assert 0.0 <= summary["train_one_epoch"]["test_acc"] <= 1.0
    assert summary["train_one_epoch"]["kernel"] in ("fused", "torch")
