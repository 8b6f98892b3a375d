"""Tests for darnn.theory: exact enumeration, the annealed count, accessibility, geometry,
input validation and the `darnn theory` subcommands."""

from __future__ import annotations

import argparse
import csv
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from darnn import theory
from darnn.dynamics import is_fixed_point
from darnn.network import Recurrent


def brute_force(J: np.ndarray, j_d: float, kappa: float, ext: np.ndarray | None) -> set[tuple]:
    """Every s with s_i h_i > kappa for all i, by looping over itertools.product."""
    n = J.shape[0]
    off = J - np.diag(np.diag(J))
    e = np.zeros(n) if ext is None else ext
    found = set()
    for s in itertools.product((1.0, -1.0), repeat=n):
        s = np.array(s)
        h = off @ s + j_d * s + e
        if np.all(s * h > kappa):
            found.add(tuple(int(x) for x in s))
    return found


def min_stability(J: np.ndarray, s: np.ndarray) -> float:
    off = J - np.diag(np.diag(J))
    return float(np.min(s * (off @ s)))


CASES = [
    # (n, integer couplings, j_d, kappa, with external field)
    (1, False, 0.5, 0.0, False),
    (4, False, 0.3, 0.0, False),
    (7, False, 0.8, 0.4, True),
    (10, False, 0.5, -0.2, False),
    (6, True, 0.0, 0.0, False),  # integer J, no fields: s_i h_i = 0 happens
    (9, True, 0.0, 0.0, True),
    (8, True, 1.0, 1.0, False),  # s_i h_i = kappa exactly through J_D
    (10, True, 2.0, 0.0, False),
]


@pytest.mark.parametrize(("n", "integer", "j_d", "kappa", "with_ext"), CASES)
def test_enumeration_equals_brute_force(
    n: int, integer: bool, j_d: float, kappa: float, with_ext: bool
) -> None:
    gen = torch.Generator().manual_seed(n)
    if integer:
        J = torch.randint(-2, 3, (n, n), generator=gen).double()
        ext = torch.randint(-1, 2, (n,), generator=gen).double() if with_ext else None
    else:
        J = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
        ext = 0.3 * torch.randn(n, generator=gen, dtype=torch.float64) if with_ext else None
    J.fill_diagonal_(5.0)  # must be ignored
    expected = brute_force(J.numpy(), j_d, kappa, None if ext is None else ext.numpy())
    for chunk in (1, 5, theory.DEFAULT_CHUNK):  # tiny chunks, a non-power of two, one
        res = theory.enumerate_fixed_points(J, j_d, kappa, ext, chunk=chunk, return_states=True)
        assert res.count == len(expected)
        assert {tuple(s) for s in res.states.tolist()} == expected


def test_ties_are_not_fixed_points() -> None:
    """Integer J with zero J_D: states with some s_i h_i = 0 exist and are excluded."""
    gen = torch.Generator().manual_seed(3)
    J = torch.randint(-1, 2, (8, 8), generator=gen).double()
    states = theory.index_to_states(torch.arange(2**8), 8).double().numpy()
    margins = np.array([min_stability(J.numpy(), s) for s in states])
    assert (margins == 0).sum() > 0  # the tie case is exercised
    strict = theory.enumerate_fixed_points(J, 0.0, 0.0).count
    assert strict == (margins > 0).sum()
    assert theory.enumerate_fixed_points(J, 0.0, -0.5).count == (margins >= 0).sum() > strict


def test_returned_states_are_fixed_points_of_the_network() -> None:
    gen = torch.Generator().manual_seed(0)
    J = theory.random_coupling(12, gen)
    res = theory.enumerate_fixed_points(J, 0.7, return_states=True, limit=5)
    full = theory.enumerate_fixed_points(J, 0.7, return_states=True, limit=10**6)
    assert res.count == full.count > 5
    assert res.states.shape == (5, 12) and res.states.dtype == torch.int8
    assert torch.equal(res.states, full.states[:5])  # the first ones in index order
    net = Recurrent.from_matrices([J], j_d=0.7)
    s = full.states.double()
    assert is_fixed_point([s], net.internal_fields([s])).all()
    assert theory.enumerate_fixed_points(J, 0.7).states is None


def test_grid_counts_equal_single_counts() -> None:
    gen = torch.Generator().manual_seed(1)
    J = theory.random_coupling(11, gen)
    j_d, kappas = [0.0, 0.3, 1.0], [0.0, 0.3, -0.2]
    grid = theory.count_fixed_points(J, j_d, kappas, chunk=64)
    for a, jd in enumerate(j_d):
        for b, k in enumerate(kappas):
            assert grid[a, b] == theory.enumerate_fixed_points(J, jd, k).count
    assert grid[1, 1] == grid[0, 0]  # only J_D - kappa matters


def test_annealed_formulas() -> None:
    assert theory.annealed_complexity(0.0) == pytest.approx(0.0, abs=1e-15)
    assert theory.annealed_complexity(1.0, 0.4) == pytest.approx(
        math.log(2) + math.log(0.5 * math.erfc(-0.6 / math.sqrt(2)))
    )
    assert theory.annealed_count(20, 0.5) == pytest.approx(
        math.exp(20 * theory.annealed_complexity(0.5))
    )
    assert theory.annealed_count(1, 0.0, finite_size=False) == pytest.approx(1.0)
    assert theory.annealed_complexity(-50.0) < -1000  # no underflow to -inf or nan
    assert theory.annealed_count(5000, 1.0) == math.inf
    with pytest.raises(ValueError, match="n=1"):
        theory.annealed_count(1, 0.5, finite_size=True)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """250 tiny enumerations: a second thread only adds fork-join waits (5x on a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_ensemble_mean_count_matches_annealed() -> None:
    """N=14, J_D=1: E#FP is (2 Phi(J_D sqrt(N/(N-1))))^N exactly (independent rows).

    With 250 couplings the standard error is ~2% of the mean, so a 4-sigma window
    distinguishes it from the N -> inf formula (15% lower at N=14).
    """
    n, j_d, samples = 14, 1.0, 250
    gen = torch.Generator().manual_seed(2024)
    counts = np.array(
        [
            theory.enumerate_fixed_points(theory.random_coupling(n, gen), j_d).count
            for _ in range(samples)
        ],
        dtype=float,
    )
    mean, se = counts.mean(), counts.std(ddof=1) / math.sqrt(samples)
    exact = theory.annealed_count(n, j_d, finite_size=True)
    assert se < 0.03 * exact
    assert abs(mean - exact) < 4 * se
    assert abs(mean - theory.annealed_count(n, j_d)) > 4 * se  # the test can tell them apart


def test_count_experiment_rows() -> None:
    rows = theory.count_experiment((6, 8), (0.0, 1.0), (0.0,), n_samples=5, seed=1)
    assert len(rows) == 4
    for r in rows:
        assert r.samples == 5 and 0 <= r.zero_fraction <= 1
        assert r.annealed == pytest.approx(theory.annealed_complexity(r.j_d, r.kappa))
        if r.zero_fraction == 0:
            assert r.quenched <= r.complexity + 1e-12  # Jensen
    again = theory.count_experiment((6, 8), (0.0, 1.0), (0.0,), n_samples=5, seed=1)
    assert again == rows


# ----- accessibility -------------------------------------------------------------------
def _numbers(rows: list[theory.AccessRow]) -> list[tuple]:
    """The measured numbers, nan as None so that equal runs compare equal."""
    numbers = [(r.converged, r.median_sweeps, r.module_overlap) for r in rows]
    return [tuple(None if math.isnan(x) else x for x in row) for row in numbers]


@pytest.mark.parametrize(
    ("model", "schedule"),
    [("single", "synchronous"), ("single", "asynchronous"), ("chain", "asynchronous")],
)
def test_accessibility_reproducible(model: str, schedule: str) -> None:
    kw = dict(model=model, schedule=schedule, n_couplings=2, n_starts=4, max_sweeps=30, seed=5)
    a = theory.accessibility(60, [0.5, 1.5], **kw)
    b = theory.accessibility(60, [0.5, 1.5], **kw)
    assert _numbers(a) == _numbers(b)
    c = theory.accessibility(60, [0.5, 1.5], **{**kw, "seed": 6})
    assert [r.runs for r in c] == [8, 8]


def test_accessibility_sensible() -> None:
    kw = dict(n_couplings=2, n_starts=8, max_sweeps=60)
    sync = theory.accessibility(300, [0.0, 2.0], schedule="synchronous", **kw)
    assert sync[0].converged <= 0.2
    assert sync[1].converged == 1.0 and sync[1].median_sweeps <= 10
    asy = theory.accessibility(100, [0.0, 1.5], schedule="asynchronous", **kw)
    assert asy[0].converged <= 0.2
    assert asy[1].converged == 1.0 and asy[1].median_sweeps <= 5
    chain = theory.accessibility(100, [0.0, 3.0], model="chain", schedule="sequential", **kw)
    assert chain[0].converged <= 0.2
    assert chain[1].converged == 1.0 and chain[1].module_overlap > 0.95
    assert all(r.parameter == "lambda" for r in chain)
    # Fully synchronous: the two modules swap states every sweep instead of aligning.
    swap = theory.accessibility(100, [3.0], model="chain", schedule="synchronous", **kw)[0]
    assert swap.converged == 0.0 and swap.two_cycle == 1.0
    assert math.isnan(asy[0].two_cycle) and sync[1].two_cycle == 0.0


def test_transition_point() -> None:
    assert theory.transition_point([0, 1, 2], [0.0, 0.25, 0.75]) == pytest.approx(1.5)
    assert math.isnan(theory.transition_point([0, 1], [0.0, 0.1]))
    assert theory.transition_point([0, 1], [0.6, 1.0]) == 0


# ----- geometry ------------------------------------------------------------------------
def test_overlap_and_flip_helpers() -> None:
    gen = torch.Generator().manual_seed(0)
    s = theory.random_states(5, 40, gen, torch.float64)
    q = theory.overlaps(s)
    assert q.shape == (10,) and q.abs().max() <= 1
    assert theory.overlaps(s, s).tolist() == [1.0] * 5
    flipped = theory.flip_random(s, 7, gen)
    assert theory.hamming(flipped, s).tolist() == [7] * 5
    assert theory.overlaps(s, flipped).tolist() == pytest.approx([(40 - 14) / 40] * 5)


def test_geometry_ranges() -> None:
    res = theory.geometry_experiment(
        80,
        [0.8, 1.5],
        n_starts=10,
        distances=[1, 4, 16],
        radii=[0.0, 1.0],
        n_bases=3,
        trials=4,
        max_sweeps=50,
        seed=2,
    )
    for j_d, frac in res.reached.items():
        assert 0 <= frac <= 1
        k = round(frac * 10)
        fp = [r for r in res.overlaps if r.j_d == j_d and r.kind == "fp-fp"]
        assert len(fp) == k * (k - 1) // 2
    assert all(-1 <= r.q <= 1 for r in res.overlaps)
    assert res.returns
    for r in res.returns:
        assert 0 <= r.stable_start <= r.converged <= 1 and 0 <= r.fraction <= r.converged
        assert r.trials == min(3, round(res.reached[r.j_d] * 10)) * 4
        assert math.isnan(r.mean_distance) or 0 <= r.mean_distance <= 80
    by = {(r.j_d, r.d, r.radius): r.fraction for r in res.returns}
    assert all(by[(j, d, 0.0)] <= by[(j, d, 1.0)] for j, d, _ in by)


def test_geometry_without_fixed_points(tmp_path: Path) -> None:
    res = theory.geometry_experiment(50, [0.0], n_starts=4, distances=[1], max_sweeps=5)
    assert res.reached == {0.0: 0.0} and res.returns == [] and res.overlaps == []
    theory.plot_geometry(res, tmp_path / "g.png")  # empty panels, no error
    assert (tmp_path / "g.png").exists()


# ----- bad input -----------------------------------------------------------------------
def test_bad_enumeration_input() -> None:
    with pytest.raises(ValueError, match="square"):
        theory.enumerate_fixed_points(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="square"):
        theory.count_fixed_points(torch.zeros(5), [0.0])
    with pytest.raises(ValueError, match="N <= 24"):
        theory.enumerate_fixed_points(torch.zeros(25, 25))
    with pytest.raises(ValueError, match="N <= 24"):
        theory.count_experiment((10, 30), (0.5,))
    with pytest.raises(ValueError, match="external"):
        theory.enumerate_fixed_points(torch.zeros(4, 4), external=torch.zeros(3))
    with pytest.raises(ValueError, match="memory budget"):
        theory.count_fixed_points(torch.zeros(20, 20), [0.0], memory_budget=2**20)
    with pytest.raises(ValueError, match="memory budget"):
        theory.count_fixed_points(torch.zeros(16, 16), list(np.linspace(0, 1, 10**5)))


def test_bad_access_input_fails_before_any_run(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"memory budget of 4\.00 GiB"):
        theory.accessibility(100_000, [0.5])
    with pytest.raises(ValueError, match="memory budget"):
        theory.accessibility(4000, [0.5], schedule="asynchronous", memory_budget=2**28)

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("ran before validating the whole grid")

    monkeypatch.setattr(theory, "accessibility", no_run)
    with pytest.raises(ValueError, match="memory budget"):
        theory.access_experiment(sync_sizes=(100, 50_000), async_sizes=(), chain_sizes=())
    with pytest.raises(ValueError, match="schedule"):
        theory.access_experiment(chain_schedules=("sideways",))
    with pytest.raises(ValueError, match="lambdas is empty"):
        theory.access_experiment(lambdas=())
    with pytest.raises(ValueError, match="size"):
        theory.access_experiment(async_sizes=(1,))
    with pytest.raises(ValueError, match="no sizes"):
        theory.access_experiment(sync_sizes=(), async_sizes=(), chain_sizes=())


def test_bad_geometry_input() -> None:
    with pytest.raises(ValueError, match="exceeds N"):
        theory.geometry_experiment(50, [1.0], distances=[60])
    with pytest.raises(ValueError, match="schedule"):
        theory.geometry_experiment(50, [1.0], schedule="random")
    with pytest.raises(ValueError, match="radii"):
        theory.geometry_experiment(50, [1.0], radii=[-1.0])
    with pytest.raises(ValueError, match="memory budget"):
        theory.geometry_experiment(30_000, [1.0], distances=[1])


# ----- CLI -----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darnn theory")
    theory.add_subcommands(p.add_subparsers(dest="command", required=True))
    return p


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_cli_count_and_bad_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _parser()
    args = p.parse_args(
        [
            "count",
            "--sizes",
            "6,8",
            "--j-d",
            "0,1",
            "--kappa",
            "0",
            "--samples",
            "3",
            "--out",
            str(tmp_path / "c"),
        ]
    )
    assert args.func(args) == 0
    assert len(_rows(tmp_path / "c" / "count.csv")) == 4
    assert (tmp_path / "c" / "count.png").stat().st_size > 1000
    assert "theory count" in capsys.readouterr().out
    bad = p.parse_args(["count", "--sizes", "8,26", "--out", str(tmp_path / "bad")])
    with pytest.raises(ValueError, match="N <= 24"):
        bad.func(bad)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        p.parse_args(["count", "--sizes", "8,x"])


def test_cli_access_and_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _parser()
    args = p.parse_args(
        [
            "access",
            "--j-d",
            "0,1.5",
            "--lambdas",
            "0,3",
            "--sync-sizes",
            "50",
            "--async-sizes",
            "40",
            "--chain-sizes",
            "30",
            "--couplings",
            "1",
            "--starts",
            "3",
            "--max-sweeps",
            "20",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert args.func(args) == 0
    rows = _rows(tmp_path / "a" / "access.csv")
    assert len(rows) == 2 + 2 + 3 * 2
    assert (tmp_path / "a" / "access.png").exists()
    args = p.parse_args(
        [
            "geometry",
            "--n",
            "60",
            "--j-d",
            "1.5",
            "--starts",
            "4",
            "--distances",
            "1,8",
            "--bases",
            "2",
            "--trials",
            "2",
            "--out",
            str(tmp_path / "g"),
        ]
    )
    assert args.func(args) == 0
    assert (tmp_path / "g" / "geometry.png").exists()
    assert _rows(tmp_path / "g" / "returns.csv")
    out = capsys.readouterr().out
    assert "half the runs converge" in out and "J_D=1.5" in out
