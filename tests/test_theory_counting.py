"""Tests for darnn.theory.counting.

Exact enumeration against brute force, the annealed count, the ensemble experiment and its
input validation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from darnn.dynamics import is_fixed_point
from darnn.network import Recurrent
from darnn.theory import counting
from darnn.theory.common import random_coupling


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
    for chunk in (1, 5, counting.DEFAULT_CHUNK):  # tiny chunks, a non-power of two, one
        res = counting.enumerate_fixed_points(J, j_d, kappa, ext, chunk=chunk, return_states=True)
        assert res.count == len(expected)
        assert {tuple(s) for s in res.states.tolist()} == expected


def test_ties_are_not_fixed_points() -> None:
    """Integer J with zero J_D: states with some s_i h_i = 0 exist and are excluded."""
    gen = torch.Generator().manual_seed(3)
    J = torch.randint(-1, 2, (8, 8), generator=gen).double()
    states = counting.index_to_states(torch.arange(2**8), 8).double().numpy()
    margins = np.array([min_stability(J.numpy(), s) for s in states])
    assert (margins == 0).sum() > 0  # the tie case is exercised
    strict = counting.enumerate_fixed_points(J, 0.0, 0.0).count
    assert strict == (margins > 0).sum()
    assert counting.enumerate_fixed_points(J, 0.0, -0.5).count == (margins >= 0).sum() > strict


def test_returned_states_are_fixed_points_of_the_network() -> None:
    gen = torch.Generator().manual_seed(0)
    J = random_coupling(12, gen)
    res = counting.enumerate_fixed_points(J, 0.7, return_states=True, limit=5)
    full = counting.enumerate_fixed_points(J, 0.7, return_states=True, limit=10**6)
    assert res.count == full.count > 5
    assert res.states.shape == (5, 12) and res.states.dtype == torch.int8
    assert torch.equal(res.states, full.states[:5])  # the first ones in index order
    net = Recurrent.from_matrices([J], j_d=0.7)
    s = full.states.double()
    assert is_fixed_point([s], net.internal_fields([s])).all()
    assert counting.enumerate_fixed_points(J, 0.7).states is None


def test_grid_counts_equal_single_counts() -> None:
    gen = torch.Generator().manual_seed(1)
    J = random_coupling(11, gen)
    j_d, kappas = [0.0, 0.3, 1.0], [0.0, 0.3, -0.2]
    grid = counting.count_fixed_points(J, j_d, kappas, chunk=64)
    for a, jd in enumerate(j_d):
        for b, k in enumerate(kappas):
            assert grid[a, b] == counting.enumerate_fixed_points(J, jd, k).count
    assert grid[1, 1] == grid[0, 0]  # only J_D - kappa matters


def test_annealed_formulas() -> None:
    assert counting.annealed_complexity(0.0) == pytest.approx(0.0, abs=1e-15)
    assert counting.annealed_complexity(1.0, 0.4) == pytest.approx(
        math.log(2) + math.log(0.5 * math.erfc(-0.6 / math.sqrt(2)))
    )
    assert counting.annealed_count(20, 0.5) == pytest.approx(
        math.exp(20 * counting.annealed_complexity(0.5))
    )
    assert counting.annealed_count(1, 0.0, finite_size=False) == pytest.approx(1.0)
    assert counting.annealed_complexity(-50.0) < -1000  # no underflow to -inf or nan
    assert counting.annealed_count(5000, 1.0) == math.inf
    with pytest.raises(ValueError, match="n=1"):
        counting.annealed_count(1, 0.5, finite_size=True)


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
    Js = [random_coupling(n, gen) for _ in range(samples)]
    counts = np.array([counting.enumerate_fixed_points(J, j_d).count for J in Js], dtype=float)
    mean, se = counts.mean(), counts.std(ddof=1) / math.sqrt(samples)
    exact = counting.annealed_count(n, j_d, finite_size=True)
    assert se < 0.03 * exact
    assert abs(mean - exact) < 4 * se
    assert abs(mean - counting.annealed_count(n, j_d)) > 4 * se  # the test can tell them apart


def test_count_experiment_rows() -> None:
    rows = counting.count_experiment((6, 8), (0.0, 1.0), (0.0,), n_samples=5, seed=1)
    assert len(rows) == 4
    for r in rows:
        assert r.samples == 5 and 0 <= r.zero_fraction <= 1
        assert r.annealed == pytest.approx(counting.annealed_complexity(r.j_d, r.kappa))
        if r.zero_fraction == 0:
            assert r.quenched <= r.complexity + 1e-12  # Jensen
    again = counting.count_experiment((6, 8), (0.0, 1.0), (0.0,), n_samples=5, seed=1)
    assert again == rows
    other = counting.count_experiment((6, 8), (0.0, 1.0), (0.0,), n_samples=5, seed=2)
    assert [r.mean_count for r in other] != [r.mean_count for r in rows]


def test_count_experiment_single_sample_has_no_stderr() -> None:
    rows = counting.count_experiment((6,), (1.0,), (0.0,), n_samples=1)
    assert math.isnan(rows[0].stderr_count) and rows[0].mean_count >= 0


def test_bad_enumeration_input() -> None:
    with pytest.raises(ValueError, match="square"):
        counting.enumerate_fixed_points(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="square"):
        counting.count_fixed_points(torch.zeros(5), [0.0])
    with pytest.raises(ValueError, match="N <= 24"):
        counting.enumerate_fixed_points(torch.zeros(25, 25))
    with pytest.raises(ValueError, match="N <= 24"):
        counting.count_experiment((10, 30), (0.5,))
    with pytest.raises(ValueError, match="external"):
        counting.enumerate_fixed_points(torch.zeros(4, 4), external=torch.zeros(3))
    with pytest.raises(ValueError, match="memory budget"):
        counting.count_fixed_points(torch.zeros(20, 20), [0.0], memory_budget=2**20)
    with pytest.raises(ValueError, match="memory budget"):
        counting.count_fixed_points(torch.zeros(16, 16), list(np.linspace(0, 1, 10**5)))
    with pytest.raises(ValueError, match="kappas is empty"):
        counting.count_experiment((6,), (0.5,), ())
    with pytest.raises(ValueError, match="n_samples"):
        counting.count_experiment((6,), (0.5,), n_samples=0)
