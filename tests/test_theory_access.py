"""Tests for darnn.theory.access.

Reproducibility and sense of the accessibility curves, the transition point, and
validation of the whole grid before any run.
"""

from __future__ import annotations

import math

import pytest

from darnn.theory import access


def _numbers(rows: list[access.AccessRow]) -> list[tuple]:
    """The measured numbers, nan as None so that equal runs compare equal."""
    numbers = [(r.converged, r.median_sweeps, r.module_overlap) for r in rows]
    return [tuple(None if math.isnan(x) else x for x in row) for row in numbers]


@pytest.mark.parametrize(
    ("model", "schedule"),
    [("single", "synchronous"), ("single", "asynchronous"), ("chain", "asynchronous")],
)
def test_accessibility_reproducible(model: str, schedule: str) -> None:
    kw = dict(model=model, schedule=schedule, n_couplings=2, n_starts=4, max_sweeps=30, seed=5)
    a = access.accessibility(60, [0.5, 1.5], **kw)
    b = access.accessibility(60, [0.5, 1.5], **kw)
    assert _numbers(a) == _numbers(b)
    c = access.accessibility(60, [0.5, 1.5], **{**kw, "seed": 6})
    assert [r.runs for r in c] == [8, 8]


def test_accessibility_sensible() -> None:
    kw = dict(n_couplings=2, n_starts=8, max_sweeps=60)
    sync = access.accessibility(300, [0.0, 2.0], schedule="synchronous", **kw)
    assert sync[0].converged <= 0.2
    assert sync[1].converged == 1.0 and sync[1].median_sweeps <= 10
    asy = access.accessibility(100, [0.0, 1.5], schedule="asynchronous", **kw)
    assert asy[0].converged <= 0.2
    assert asy[1].converged == 1.0 and asy[1].median_sweeps <= 5
    chain = access.accessibility(100, [0.0, 3.0], model="chain", schedule="sequential", **kw)
    assert chain[0].converged <= 0.2
    assert chain[1].converged == 1.0 and chain[1].module_overlap > 0.95
    assert all(r.parameter == "lambda" for r in chain)
    # Fully synchronous: the two modules swap states every sweep instead of aligning.
    swap = access.accessibility(100, [3.0], model="chain", schedule="synchronous", **kw)[0]
    assert swap.converged == 0.0 and swap.two_cycle == 1.0
    assert math.isnan(asy[0].two_cycle) and sync[1].two_cycle == 0.0


def test_transition_point() -> None:
    assert access.transition_point([0, 1, 2], [0.0, 0.25, 0.75]) == pytest.approx(1.5)
    assert math.isnan(access.transition_point([0, 1], [0.0, 0.1]))
    assert access.transition_point([0, 1], [0.6, 1.0]) == 0


def test_transition_points_per_curve() -> None:
    def row(schedule: str, n: int, value: float, converged: float) -> access.AccessRow:
        nan = math.nan
        return access.AccessRow(
            "single", schedule, n, "j_d", value, 4, converged, 0.0, nan, nan, nan, 0.0
        )

    rows = [row("synchronous", 10, 0.0, 0.0), row("synchronous", 10, 1.0, 1.0)]
    rows += [row("asynchronous", 10, 0.0, 0.0), row("asynchronous", 10, 1.0, 0.25)]
    points = access.transition_points(rows)
    assert points[("single", "synchronous", 10)] == pytest.approx(0.5)
    assert math.isnan(points[("single", "asynchronous", 10)])


def test_bad_access_input_fails_before_any_run(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"memory budget of 4\.00 GiB"):
        access.accessibility(100_000, [0.5])
    with pytest.raises(ValueError, match="memory budget"):
        access.accessibility(4000, [0.5], schedule="asynchronous", memory_budget=2**28)

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("ran before validating the whole grid")

    monkeypatch.setattr(access, "accessibility", no_run)
    with pytest.raises(ValueError, match="memory budget"):
        access.access_experiment(sync_sizes=(100, 50_000), async_sizes=(), chain_sizes=())
    with pytest.raises(ValueError, match="schedule"):
        access.access_experiment(chain_schedules=("sideways",))
    with pytest.raises(ValueError, match="lambdas is empty"):
        access.access_experiment(lambdas=())
    with pytest.raises(ValueError, match="size"):
        access.access_experiment(async_sizes=(1,))
    with pytest.raises(ValueError, match="no sizes"):
        access.access_experiment(sync_sizes=(), async_sizes=(), chain_sizes=())
