"""Tests for darnn.plots.figure: a PNG written atomically, the figure closed either way."""

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
