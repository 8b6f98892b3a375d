"""The script benchmarks/contrast_tuning.py (the contrast benches' equal tuning effort).

Its methods are the bench files' methods, and it runs end to end: one study per method, the
report holds each best trial as overrides that the bench file can take.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "contrast_tuning.py"
pytest.importorskip("optuna", reason="the sweep extra is not installed: pip install -e '.[sweep]'")


def load_script() -> object:
    spec = importlib.util.spec_from_file_location("contrast_tuning", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bench", ["contrast", "contrast-fashion"])
def test_methods_are_the_bench_files_methods(bench: str) -> None:
    script = load_script()
    names = [name for name, _, _ in script.methods()]  # type: ignore[attr-defined]
    listed = yaml.safe_load((ROOT / "configs" / "bench" / f"{bench}.yaml").read_text())["methods"]
    # Every tuned method is benched; the bench adds the untuned recipe and its MLP.
    assert [m for m in listed if m not in names] == ["dynamical_recipe", "mlp_relu"]
    assert names == [m for m in listed if m in names]


def test_tunes_every_method_and_reports_overrides(tmp_path: Path) -> None:
    report = tmp_path / "tuning.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable, str(SCRIPT), "contrast",
            "--trials", "1", "--limit-train", "300", "--epochs", "1", "--workers", "1",
            "--sweeps", str(tmp_path / "sweeps"), "--report", str(report),
            "--set", "data.name=digits", "--set", "data.transform=null",
            "--set", "data.transform_dim=null", "--set", "network.hidden=[32]",
        ],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = report.read_text()
    best = [line for line in text.splitlines() if line.startswith("best trial as overrides: ")]
    assert len(best) == 8
    assert "learning.lr_j=" in best[0] and "learning.lr_j=" not in best[3]  # readout-only space
    assert text.count("1 complete") == 8
