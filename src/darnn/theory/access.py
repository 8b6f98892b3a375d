"""Dynamical accessibility (docs/model.md#accessibility).

How often, and how fast, simple dynamics reach a fixed point from random starts.

One module versus its self-coupling J_D, and a two-module chain at J_D = 0 versus the
inter-module lambda, with `darnn.dynamics.relax` and any of its schedules.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..checks import check_choice, check_count, check_finite
from ..config import SCHEDULES
from ..dynamics import relax
from ..network import Recurrent
from .common import (
    MAX_SWEEPS,
    MEMORY_BUDGET,
    Log,
    check_memory,
    check_values,
    overlaps,
    random_coupling,
    random_states,
    seeded_generator,
)

MODELS = ("single", "chain")
N_COUPLINGS, N_STARTS = 2, 16  # random J per point, random starts per J


@dataclass(frozen=True)
class AccessRow:
    """How often and how fast one schedule reaches a fixed point from random starts."""

    model: str  # "single" (sweep J_D) or "chain" (two modules, sweep lambda)
    schedule: str
    n: int  # units per module
    parameter: str  # "j_d" or "lambda"
    value: float
    runs: int  # couplings x starts
    converged: float  # fraction of runs at a fixed point within max_sweeps
    stderr: float  # binomial standard error of `converged`
    median_sweeps: float  # over the converged runs; nan if none
    two_cycle: float  # fraction of runs on a period-2 cycle at the end; nan for asynchronous
    module_overlap: float  # chain: mean (1/N) s^1 . s^2 at the end; nan for one module
    seconds: float


def _dtype_for(schedule: str) -> torch.dtype:
    # Synchronous products are N^2 per sweep: float32 halves their cost and ties have
    # probability zero with Gaussian J. The asynchronous loop works in float64 anyway.
    return torch.float64 if schedule == "asynchronous" else torch.float32


def access_memory(n: int, model: str, schedule: str) -> int:
    """Bytes `accessibility` needs at most for one coupling sample (estimate)."""
    total = n * (2 if model == "chain" else 1)
    item = _dtype_for(schedule).itemsize
    # J itself, and while a module is built its two transient copies plus the previous
    # module (measured: 2.3 GB peak at N = 10^4 in float32, with the interpreter).
    nbytes = 5 * total * total * item
    if schedule == "asynchronous":
        nbytes += 3 * total * total * 8  # dense_matrix(), its float64 transpose, fields
    return nbytes


def accessibility(
    n: int,
    values: Sequence[float],
    *,
    model: str = "single",
    schedule: str = "synchronous",
    n_couplings: int = N_COUPLINGS,
    n_starts: int = N_STARTS,
    max_sweeps: int = MAX_SWEEPS,
    j_d: float = 0.0,
    seed: int = 0,
    memory_budget: float = MEMORY_BUDGET,
) -> list[AccessRow]:
    """Relax `n_starts` random starts on each of `n_couplings` random J per value.

    model "single": one module of n units, `values` are J_D. model "chain": two modules of
    n units with lambda*I between them both ways and self-coupling `j_d`; `values` are
    lambda. Couplings and starts depend on (seed, n, model) only, so every value sees the
    same disorder and starts (smooth curves; the schedules share them too).
    """
    check_count("n", n, minimum=2)
    check_choice("model", model, MODELS)
    check_choice("schedule", schedule, SCHEDULES)
    check_values("values", values)
    check_count("n_couplings", n_couplings, minimum=1)
    check_count("n_starts", n_starts, minimum=1)
    check_count("max_sweeps", max_sweeps, minimum=1)
    check_finite("j_d", j_d)
    check_memory(f"{schedule} {model} at N={n}", access_memory(n, model, schedule), memory_budget)
    dtype = _dtype_for(schedule)
    modules = 2 if model == "chain" else 1
    results: list[list[tuple[Tensor, Tensor, Tensor, float, float]]] = [[] for _ in values]
    for c in range(n_couplings):
        gen = seeded_generator(seed, n, MODELS.index(model), c)
        J = [random_coupling(n, gen, dtype) for _ in range(modules)]
        starts = [random_states(n_starts, n, gen, dtype) for _ in range(modules)]
        ext = [torch.zeros(n_starts, n, dtype=dtype) for _ in range(modules)]
        for k, v in enumerate(values):
            t0 = time.perf_counter()
            # Same J for every value: only the diagonal (or lambda) changes. A fresh module
            # per value: the public constructor is the only way to set J_D or lambda.
            if model == "single":
                net = Recurrent.from_matrices(J, j_d=v)
            else:
                net = Recurrent.from_matrices(J, j_d=j_d, lambda_forward=v, lambda_backward=v)
            r = relax(
                net,
                ext,
                starts,
                max_sweeps=max_sweeps,
                schedule=schedule,
                generator=seeded_generator(seed, n, MODELS.index(model), c, k, 1),
            )
            q12 = overlaps(r.states[0], r.states[1]).mean().item() if modules == 2 else math.nan
            cyc = _two_cycles(net, r.states, r.converged, schedule)
            results[k].append((r.converged, r.sweeps, cyc, q12, time.perf_counter() - t0))
            del net, r  # free this module before the next one is built
    rows = []
    for v, parts in zip(values, results):
        conv = torch.cat([p[0] for p in parts])
        sweeps = torch.cat([p[1] for p in parts])
        cycles = torch.cat([p[2] for p in parts])
        p = conv.double().mean().item()
        rows.append(
            AccessRow(
                model=model,
                schedule=schedule,
                n=n,
                parameter="lambda" if model == "chain" else "j_d",
                value=float(v),
                runs=conv.numel(),
                converged=p,
                stderr=math.sqrt(p * (1 - p) / conv.numel()),
                median_sweeps=float(np.median(sweeps[conv].numpy())) if conv.any() else math.nan,
                two_cycle=cycles.double().mean().item() if cycles.numel() else math.nan,
                module_overlap=float(np.mean([q[3] for q in parts])),
                seconds=sum(q[4] for q in parts),
            )
        )
    return rows


def _two_cycles(
    net: Recurrent, states: Sequence[Tensor], converged: Tensor, schedule: str
) -> Tensor:
    """(B,) bool: not a fixed point, but back to the same state after two more sweeps.

    Deterministic schedules only (empty for asynchronous): the synchronous update is a
    map, and a period-2 orbit is how it fails when the self-drive is strong.
    """
    if schedule == "asynchronous":
        return torch.zeros(0, dtype=torch.bool)
    out = torch.zeros_like(converged)
    idx = (~converged).nonzero().squeeze(1)
    if idx.numel():
        s = [x[idx] for x in states]
        r = relax(net, [torch.zeros_like(x) for x in s], s, max_sweeps=2, schedule=schedule)
        back = torch.stack([(a == b).all(dim=1) for a, b in zip(r.states, s)]).all(dim=0)
        out[idx] = back
    return out


def transition_point(
    values: Sequence[float], fractions: Sequence[float], level: float = 0.5
) -> float:
    """First value where the converged fraction reaches `level` (linear interpolation).

    NaN if it never does.
    """
    pairs = sorted(zip(values, fractions))
    for (x0, y0), (x1, y1) in zip(pairs, pairs[1:]):
        if y0 < level <= y1:
            return x0 + (level - y0) * (x1 - x0) / (y1 - y0)
    return pairs[0][0] if pairs and pairs[0][1] >= level else math.nan


def transition_points(rows: Sequence[AccessRow]) -> dict[tuple[str, str, int], float]:
    """(model, schedule, N) -> the value where half the runs converge (`transition_point`)."""
    keys = sorted({(r.model, r.schedule, r.n) for r in rows})
    out = {}
    for key in keys:
        sel = [r for r in rows if (r.model, r.schedule, r.n) == key]
        out[key] = transition_point([r.value for r in sel], [r.converged for r in sel])
    return out


def access_experiment(
    j_d_values: Sequence[float] = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5),
    lambdas: Sequence[float] = (0.0, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0),
    *,
    # Asynchronous sweeps cost ~6e-9 N^2 s per run on this CPU (a NumPy loop over units),
    # synchronous ones a matrix product: the default sizes fit in a few minutes.
    sync_sizes: Sequence[int] = (250, 1000, 4000),
    async_sizes: Sequence[int] = (100, 300, 900),
    chain_sizes: Sequence[int] = (100, 300),
    chain_schedules: Sequence[str] = ("synchronous", "sequential", "asynchronous"),
    n_couplings: int = N_COUPLINGS,
    n_starts: int = N_STARTS,
    max_sweeps: int = MAX_SWEEPS,
    seed: int = 0,
    memory_budget: float = MEMORY_BUDGET,
    log: Log | None = None,
) -> list[AccessRow]:
    """Accessibility versus J_D, and versus lambda for the two-module chain at J_D = 0.

    J_D with the synchronous and asynchronous schedules. Every cell is validated before
    any runs.

    Args:
        j_d_values: comma-separated J_D for the single module.
        lambdas: comma-separated inter-module λ for the chain.
        sync_sizes: comma-separated N, synchronous schedule.
        async_sizes: comma-separated N, asynchronous schedule.
        chain_sizes: comma-separated units per module.
        chain_schedules: comma-separated chain schedules.
        n_couplings: random J per size.
        n_starts: random starts per coupling.
        max_sweeps: sweeps before a run counts as not converged.
        seed: seed of couplings and starts.
        memory_budget: bytes a cell may use.
        log: called with one progress line per cell.
    """
    plan: list[tuple[str, str, int]] = []
    for sizes, model, schedules in (
        (sync_sizes, "single", ("synchronous",)),
        (async_sizes, "single", ("asynchronous",)),
        (chain_sizes, "chain", tuple(chain_schedules)),
    ):
        for schedule in schedules:
            check_choice("schedule", schedule, SCHEDULES)
            for n in sizes:
                check_count("size", n, minimum=2)
                check_memory(
                    f"{schedule} {model} at N={n}",
                    access_memory(n, model, schedule),
                    memory_budget,
                )
                plan.append((model, schedule, n))
    if not plan:
        raise ValueError("no sizes given: set at least one of sync, async or chain sizes")
    check_values("j_d_values", j_d_values)
    check_values("lambdas", lambdas)
    cell = functools.partial(  # what every cell of the plan shares
        accessibility,
        n_couplings=n_couplings,
        n_starts=n_starts,
        max_sweeps=max_sweeps,
        seed=seed,
        memory_budget=memory_budget,
    )
    rows = []
    for model, schedule, n in plan:
        t0 = time.perf_counter()
        values = lambdas if model == "chain" else j_d_values
        rows += cell(n, values, model=model, schedule=schedule)
        if log:
            log(f"access: {model} {schedule} N={n}: {time.perf_counter() - t0:.1f}s")
    return rows
