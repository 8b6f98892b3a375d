"""The script benchmarks/probes.py (docs/recipes.md's second round) still runs.

And --renorm holds the W_in row norms fixed for dense and CSR storage.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("density", ["1.0", "0.3"], ids=["dense", "csr"])
def test_probe_variants_run(density: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "probes.py"), "p",
            "--config", str(ROOT / "configs" / "default.yaml"),
            "--center", "--renorm", "--rates-final", "0.5",
            "data.name=digits", "network.hidden=[48]", "network.j_density=1.0",
            f"network.w_in_density={density}", "network.sparse_format=auto",
            "train.epochs=2", "train.batch_size=32",
        ],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    norms = re.findall(r"w_in_row_norm (\S+)", result.stdout)
    assert len(norms) == 2 and norms[0] == norms[1], result.stdout
    curve = re.search(r"^RESULT p ((?:\S+ ?)+)$", result.stdout, re.M)
    assert curve is not None and len(curve.group(1).split()) == 2
    assert all(0.0 <= float(v) <= 1.0 for v in curve.group(1).split())
