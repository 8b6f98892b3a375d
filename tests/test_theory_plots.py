"""Tests for darnn.theory.plots: every figure is drawn, also from degenerate results."""

from __future__ import annotations

from pathlib import Path

from darnn.theory import access, counting, geometry, plots


def test_plots_write_png(tmp_path: Path) -> None:
    rows = counting.count_experiment((6, 8), (0.0, 1.0), (0.0, 0.5), n_samples=2)
    plots.plot_count(rows, tmp_path / "count.png")
    acc = access.access_experiment(
        (0.0, 1.5),
        (0.0, 3.0),
        sync_sizes=(30,),
        async_sizes=(),
        chain_sizes=(20,),
        n_couplings=1,
        n_starts=2,
        max_sweeps=10,
    )
    plots.plot_access(acc, tmp_path / "access.png", max_sweeps=10)
    for name in ("count.png", "access.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_geometry_plot_without_fixed_points(tmp_path: Path) -> None:
    res = geometry.geometry_experiment(50, [0.0], n_starts=4, distances=[1], max_sweeps=5)
    assert res.reached == {0.0: 0.0} and not res.returns
    plots.plot_geometry(res, tmp_path / "g.png")  # empty panels, no error
    assert (tmp_path / "g.png").stat().st_size > 1000
