"""Every tutorial of docs/tutorials/ runs end to end, so none can rot.

Each script runs in its own interpreter, in a fresh temporary working directory (it writes
its run directories and figures there), with one CPU thread and a time limit: any exception
fails the test with the script's output. The budgets are the scripts' own (each well under a
minute on a busy 2-core CPU). The two Fashion-MNIST tutorials need the data set that
scripts/setup.sh installs (the Debian package dataset-fashion-mnist); without it they are
skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from darnn.data import find_dataset

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.py"))
NEEDS_FASHION = {"02_training.py", "03_lambda_protocol.py"}
NEEDS_OPTUNA = {"05_sweep.py"}
TIMEOUT_S = 180  # a tutorial must stay well under a minute; this only catches a hang


def test_the_five_tutorials_are_there() -> None:
    assert [p.name for p in TUTORIALS] == [
        "01_single_module.py",
        "02_training.py",
        "03_lambda_protocol.py",
        "04_estimator.py",
        "05_sweep.py",
    ]


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(script: Path, tmp_path: Path) -> None:
    if script.name in NEEDS_FASHION and find_dataset("fashion-mnist") is None:
        pytest.skip("Fashion-MNIST not found (scripts/setup.sh installs dataset-fashion-mnist)")
    if script.name in NEEDS_OPTUNA:
        pytest.importorskip("optuna", reason="the sweep extra is not installed")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script.name} did not finish in {TIMEOUT_S} s:\n{exc.stdout}\n{exc.stderr}")
    elapsed = time.monotonic() - start
    assert done.returncode == 0, (
        f"{script.name} failed (exit {done.returncode}) after {elapsed:.0f} s:\n"
        f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
