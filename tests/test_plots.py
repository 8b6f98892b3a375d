"""Tests for darnn.plots.

The figure helper (a PNG written atomically, the figure closed either way) and the training
plots.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from darnn.plots import figure


def test_figure_writes_png_and_closes(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    with figure(tmp_path / "f.png", 2, 3, (6, 4)) as axes:
        assert axes.shape == (2, 3)  # always 2-D, even for one panel
        axes[1][2].plot([0, 1], [1, 0])
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(plt.get_fignums()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary left


def test_figure_failure_writes_nothing(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    with (
        pytest.raises(RuntimeError, match="drawing failed"),
        figure(tmp_path / "f.png", 1, 1, (3, 3)),
    ):
        raise RuntimeError("drawing failed")
    assert list(tmp_path.iterdir()) == []
    assert len(plt.get_fignums()) == before


def test_training_plots(tmp_path: Path) -> None:
    import torch

    from darnn.plots import plot_field_histograms, plot_learning_curves

    metrics = [
        {
            "epoch": e,
            **dict.fromkeys(("train_acc", "val_acc", "test_acc"), 0.5 + 0.1 * e),
            **dict.fromkeys(("unstable", "converged", "eval_converged"), 0.2),
            "symmetry": [0.1, 0.0],
        }
        for e in range(1, 4)
    ]
    plot_learning_curves(tmp_path / "curves.png", metrics)
    fields = [{"internal": torch.randn(50, 8), "external": torch.randn(50, 8)}] * 2
    plot_field_histograms(tmp_path / "fields.png", fields)
    for name in ("curves.png", "fields.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
