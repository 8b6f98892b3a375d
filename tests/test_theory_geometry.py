"""Tests for darnn.theory.geometry.

Overlap and flip helpers, the ranges of the geometry experiment, and its input validation.
"""

from __future__ import annotations

import math

import pytest
import torch

from darnn.theory import geometry
from darnn.theory.common import overlaps, random_states


def test_overlap_and_flip_helpers() -> None:
    gen = torch.Generator().manual_seed(0)
    s = random_states(5, 40, gen, torch.float64)
    q = overlaps(s)
    assert q.shape == (10,) and q.abs().max() <= 1
    assert overlaps(s, s).tolist() == [1.0] * 5
    flipped = geometry.flip_random(s, 7, gen)
    assert geometry.hamming(flipped, s).tolist() == [7] * 5
    assert overlaps(s, flipped).tolist() == pytest.approx([(40 - 14) / 40] * 5)


def test_geometry_ranges() -> None:
    res = geometry.geometry_experiment(
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


def test_geometry_without_fixed_points() -> None:
    res = geometry.geometry_experiment(50, [0.0], n_starts=4, distances=[1], max_sweeps=5)
    assert res.reached == {0.0: 0.0} and res.returns == [] and res.overlaps == []


def test_bad_geometry_input() -> None:
    with pytest.raises(ValueError, match="exceeds N"):
        geometry.geometry_experiment(50, [1.0], distances=[60])
    with pytest.raises(ValueError, match="distances is empty"):
        geometry.geometry_experiment(50, [1.0], distances=[])
    with pytest.raises(ValueError, match="schedule"):
        geometry.geometry_experiment(50, [1.0], schedule="random")
    with pytest.raises(ValueError, match="radii"):
        geometry.geometry_experiment(50, [1.0], radii=[-1.0])
    with pytest.raises(ValueError, match="memory budget"):
        geometry.geometry_experiment(30_000, [1.0], distances=[1])
