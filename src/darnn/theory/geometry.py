"""Geometry of the reached fixed points (docs/model.md#geometry).

Their mutual overlaps, and whether a start at Hamming distance d from one relaxes to a fixed
point within distance r*d of it (a dense, connected set) or back to it (an isolated
attractor) or far away.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..checks import check_choice, check_count
from ..config import SCHEDULES
from ..dynamics import relax
from ..network import Recurrent
from . import common
from .access import access_memory

SCHEDULE = "asynchronous"  # the dynamics the theory analyses
RADII = (0.0, 1.0, 2.0)  # return radii r, in units of the distance d
TRIALS = 8  # perturbations per fixed point and distance


@dataclass(frozen=True)
class OverlapRow:
    """One overlap: between two reached fixed points, or a start and its fixed point."""

    j_d: float
    kind: str  # "fp-fp" or "start-fp"
    q: float


@dataclass(frozen=True)
class ReturnRow:
    """Starts at Hamming distance d from a reached fixed point s*, relaxed again."""

    j_d: float
    n: int
    d: int
    radius: float  # r: success means a fixed point within Hamming distance r*d of s*
    trials: int
    fraction: float  # converged and within r*d
    converged: float  # converged anywhere
    stable_start: float  # the perturbed start was itself a fixed point (local entropy sample)
    mean_distance: float  # mean Hamming distance to s* of the converged runs (nan if none)


@dataclass(frozen=True)
class GeometryResult:
    """Result of `geometry_experiment`: overlap rows, return rows, reached fractions."""

    overlaps: list[OverlapRow]
    returns: list[ReturnRow]
    reached: dict[float, float]  # J_D -> fraction of random starts that reached a fixed point


def hamming(a: Tensor, b: Tensor) -> Tensor:
    """Number of units where the rows of a and b differ."""
    return (a != b).sum(dim=1)


def flip_random(states: Tensor, d: int, generator: torch.Generator) -> Tensor:
    """Copy of `states` with exactly d distinct random units of every row flipped."""
    idx = torch.rand(states.shape, generator=generator).argsort(dim=1)[:, :d]
    out = states.clone()
    out.scatter_(1, idx, -states.gather(1, idx))
    return out


def _check_perturbations(distances: Sequence[int], radii: Sequence[float], n: int) -> None:
    common.check_values("radii", radii)
    if any(r < 0 for r in radii):
        raise ValueError(f"radii must be >= 0, got {list(radii)}")
    if len(distances) == 0:
        raise ValueError("distances is empty; give at least one Hamming distance")
    for d in distances:
        check_count("distance", d, minimum=1)
        if d > n:
            raise ValueError(f"distance {d} exceeds N={n}")


def reached_fixed_points(
    net: Recurrent,
    n_starts: int,
    *,
    schedule: str = SCHEDULE,
    max_sweeps: int = common.MAX_SWEEPS,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Relax random starts of a one-module net; (starts, final states) of the converged runs."""
    n = net.sizes[0]
    starts = common.random_states(n_starts, n, generator, torch.float64)
    r = relax(
        net,
        [torch.zeros_like(starts)],
        [starts],
        max_sweeps=max_sweeps,
        schedule=schedule,
        generator=generator,
    )
    return starts[r.converged], r.states[0][r.converged]


def return_fractions(
    net: Recurrent,
    fixed_points: Tensor,
    distances: Sequence[int],
    radii: Sequence[float] = RADII,
    *,
    trials: int = TRIALS,
    schedule: str = SCHEDULE,
    max_sweeps: int = common.MAX_SWEEPS,
    generator: torch.Generator,
) -> list[ReturnRow]:
    """How often a fixed point s* perturbed by d flips relaxes to one within r*d of s*.

    For each d: flip d random units of each fixed point (`trials` times), relax, and
    measure how often the run ends at a fixed point within r*d of s*.

    A dense cluster keeps nearby starts near (r = 1 succeeds, r = 0 need not); an
    isolated fixed point either pulls them back (r = 0) or loses them.
    """
    n = fixed_points.shape[1]
    _check_perturbations(distances, radii, n)
    base = fixed_points.repeat_interleave(trials, dim=0)
    j_d = float(net.j_d)
    rows = []
    for d in distances:
        r = relax(
            net,
            [torch.zeros_like(base)],
            [flip_random(base, d, generator)],
            max_sweeps=max_sweeps,
            schedule=schedule,
            generator=generator,
        )
        dist = hamming(r.states[0], base).double()
        conv = r.converged
        stable = (conv & (r.sweeps == 0)).double().mean().item()
        for radius in radii:
            ok = conv & (dist <= radius * d)
            rows.append(
                ReturnRow(
                    j_d=j_d,
                    n=n,
                    d=d,
                    radius=float(radius),
                    trials=base.shape[0],
                    fraction=ok.double().mean().item(),
                    converged=conv.double().mean().item(),
                    stable_start=stable,
                    mean_distance=dist[conv].mean().item() if conv.any() else math.nan,
                )
            )
    return rows


def geometry_experiment(
    n: int = 400,
    j_d_values: Sequence[float] = (0.75, 1.0, 1.5),
    *,
    n_starts: int = 64,
    distances: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
    radii: Sequence[float] = RADII,
    n_bases: int = 8,
    trials: int = TRIALS,
    schedule: str = SCHEDULE,
    max_sweeps: int = common.MAX_SWEEPS,
    seed: int = 0,
    memory_budget: float = common.MEMORY_BUDGET,
    log: common.Log | None = None,
) -> GeometryResult:
    """Overlaps and return fractions on one J of n units (the same J for every J_D).

    At most `n_bases` reached fixed points are perturbed per J_D.

    Args:
        n: units.
        j_d_values: comma-separated self-couplings J_D.
        n_starts: random starts per J_D.
        distances: comma-separated Hamming distances d.
        radii: comma-separated return radii r (x d).
        n_bases: reached fixed points to perturb.
        trials: perturbations per fixed point and d.
        schedule: dynamics.
        max_sweeps: sweeps before a run counts as not converged.
        seed: seed of couplings and starts.
        memory_budget: bytes the experiment may use.
        log: called with one progress line per J_D.
    """
    check_count("n", n, minimum=2)
    common.check_values("j_d_values", j_d_values)
    check_count("n_starts", n_starts, minimum=2)
    check_count("n_bases", n_bases, minimum=1)
    check_count("trials", trials, minimum=1)
    check_count("max_sweeps", max_sweeps, minimum=1)
    check_choice("schedule", schedule, SCHEDULES)
    _check_perturbations(distances, radii, n)
    batch = max(n_starts, n_bases * trials)
    common.check_memory(
        f"geometry at N={n} with {n_starts} starts",
        access_memory(n, "single", "asynchronous") + 8 * (n_starts**2 + 4 * batch * n),
        memory_budget,
    )
    J = common.random_coupling(n, common.seeded_generator(seed, n))
    overlap_rows: list[OverlapRow] = []
    return_rows: list[ReturnRow] = []
    reached = {}
    for k, j_d in enumerate(j_d_values):
        t0 = time.perf_counter()
        net = Recurrent.from_matrices([J], j_d=j_d)
        run_gen = common.seeded_generator(seed, n, k)
        starts, fps = reached_fixed_points(
            net, n_starts, schedule=schedule, max_sweeps=max_sweeps, generator=run_gen
        )
        reached[float(j_d)] = fps.shape[0] / n_starts
        overlap_rows += [OverlapRow(float(j_d), "fp-fp", q) for q in common.overlaps(fps).tolist()]
        overlap_rows += [
            OverlapRow(float(j_d), "start-fp", q) for q in common.overlaps(starts, fps).tolist()
        ]
        if fps.shape[0]:
            return_rows += return_fractions(
                net,
                fps[:n_bases],
                distances,
                radii,
                trials=trials,
                schedule=schedule,
                max_sweeps=max_sweeps,
                generator=run_gen,
            )
        if log:
            log(
                f"geometry: J_D={j_d:g}: {fps.shape[0]}/{n_starts} reached, "
                f"{time.perf_counter() - t0:.1f}s"
            )
    return GeometryResult(overlap_rows, return_rows, reached)
