"""Theory lab (SPEC §2): fixed-point counts, dynamical accessibility, manifold geometry.

Three experiments on random fully asymmetric couplings J (i.i.d. N(0, 1/N) off the
diagonal, the library's own `gaussian_coupling`), each a Python function and a
`darnn theory` subcommand writing CSV + PNG:

- ``count``: exact enumeration of the configurations with s_i h_i > kappa for every i
  (N <= 24) against the annealed estimate E#FP = (2 Phi(J_D - kappa))^N;
- ``access``: how often, and how fast, `darnn.dynamics.relax` reaches a fixed point from
  random starts, versus J_D (one module) and versus the inter-module lambda (two-module
  chain at J_D = 0);
- ``geometry``: overlaps between reached fixed points, and how often a start at Hamming
  distance d from a reached fixed point relaxes to a fixed point within distance r*d of it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from scipy.special import log_ndtr
from torch import Tensor

from .config import SCHEDULES, check_choice, check_count, check_finite
from .couplings import gaussian_coupling
from .dynamics import relax
from .network import Recurrent
from .runs import _figure, write_text

MAX_ENUMERATION_N = 24  # 2^24 states: seconds per matrix; beyond that use sampling
DEFAULT_CHUNK = 2**16  # states per enumeration chunk (a few MB at N = 24)
MEMORY_BUDGET = 4 * 2**30  # bytes; every experiment checks its estimate against this first
MODELS = ("single", "chain")
LARGE_SYNC, LARGE_ASYNC = 10_000, 1600  # what `darnn theory access --large` adds

Log = Callable[[str], None]


# ----- small shared pieces --------------------------------------------------------------
def _generator(seed: int, *keys: int) -> torch.Generator:
    """An independent CPU generator for (seed, keys): any cell of a grid can be rerun alone."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _check_memory(what: str, nbytes: float, budget: float) -> None:
    if nbytes > budget:
        raise ValueError(
            f"{what} needs about {nbytes / 2**30:.2f} GiB, over the memory budget of "
            f"{budget / 2**30:.2f} GiB; use smaller sizes or raise the budget"
        )


def _check_values(name: str, values: Sequence[float]) -> None:
    if len(values) == 0:
        raise ValueError(f"{name} is empty; give at least one value")
    for v in values:
        check_finite(name, v)


def _check_sizes(name: str, sizes: Sequence[int], minimum: int = 2) -> None:
    if len(sizes) == 0:
        raise ValueError(f"{name} is empty; give at least one size")
    for n in sizes:
        check_count(name, n, minimum=minimum)


def random_coupling(
    n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Dense (n, n) fully asymmetric Gaussian J, entries N(0, 1/n), zero diagonal."""
    c = gaussian_coupling(n, n, strength=1.0, density=1.0, generator=generator, zero_diagonal=True)
    return c.to_dense().to(dtype)


def random_states(batch: int, n: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """(batch, n) uniformly random configurations in {-1, +1}."""
    return torch.where(torch.rand(batch, n, generator=generator) < 0.5, -1.0, 1.0).to(dtype)


def overlaps(a: Tensor, b: Tensor | None = None) -> Tensor:
    """q = (1/N) s . s': row by row for (a, b); for a alone, every pair i < j of its rows."""
    n = a.shape[1]
    if b is not None:
        return (a * b).sum(dim=1) / n
    gram = a @ a.T / n
    i, j = torch.triu_indices(a.shape[0], a.shape[0], offset=1)
    return gram[i, j]


def hamming(a: Tensor, b: Tensor) -> Tensor:
    """Number of units where the rows of a and b differ."""
    return (a != b).sum(dim=1)


def flip_random(states: Tensor, d: int, generator: torch.Generator) -> Tensor:
    """Copy of `states` with exactly d distinct random units of every row flipped."""
    idx = torch.rand(states.shape, generator=generator).argsort(dim=1)[:, :d]
    out = states.clone()
    out.scatter_(1, idx, -states.gather(1, idx))
    return out


def _write_csv(path: Path, rows: Sequence[Any]) -> None:
    """Rows of one dataclass type as a CSV with a header (written atomically)."""
    names = [f.name for f in dataclasses.fields(rows[0])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([getattr(r, k) for k in names] for r in rows)
    write_text(path, buf.getvalue())


def _colors(name: str, k: int, top: float = 0.9) -> list[Any]:
    """k colours from a matplotlib colormap (imported on use, like the figures)."""
    import matplotlib

    return list(matplotlib.colormaps[name](np.linspace(0, top, k)))


# ----- 1. counting ----------------------------------------------------------------------
def annealed_complexity(j_d: float, kappa: float = 0.0) -> float:
    """Annealed complexity ln 2 + ln Phi(J_D - kappa) (SPEC §2), the N -> inf growth rate."""
    return math.log(2.0) + float(log_ndtr(j_d - kappa))


def annealed_count(n: int, j_d: float, kappa: float = 0.0, *, finite_size: bool = False) -> float:
    """Annealed E[#fixed points] = (2 Phi(J_D - kappa))^N.

    finite_size: use the exact field variance (N-1)/N of N(0, 1/N) couplings (the field
    sums N-1 terms); the rows of a fully asymmetric J are independent, so the expectation
    is then exact at every N, not only as N -> inf.
    """
    check_count("n", n, minimum=2 if finite_size else 1)
    x = j_d - kappa
    if finite_size:
        x *= math.sqrt(n / (n - 1))
    exponent = n * (math.log(2.0) + float(log_ndtr(x)))
    return math.exp(exponent) if exponent < 709 else math.inf  # past float64's range


@dataclass(frozen=True)
class Enumeration:
    """Result of `enumerate_fixed_points`."""

    count: int  # configurations with s_i h_i > kappa for every i
    states: Tensor | None  # (min(count, limit), N) int8 in {-1, +1}, in index order, if asked


def index_to_states(index: Tensor, n: int) -> Tensor:
    """(len(index), n) int8 configurations: bit i of the index set -> s_i = -1."""
    bits = (index.view(-1, 1) >> torch.arange(n, dtype=torch.int64)) & 1
    return (1 - 2 * bits).to(torch.int8)


def _chunk_bits(n: int, chunk: int) -> int:
    """log2 of the states per chunk: the largest power of two <= chunk (at least 2), at
    most 2^n."""
    check_count("chunk", chunk, minimum=1)
    return min(n, max(1, chunk.bit_length() - 1))


def _enumeration_bytes(n: int, bits: int, extra_per_state: int) -> int:
    # Per state in a chunk: the low-bit states, their fields, the summed fields and the
    # stabilities (float64, N wide each) plus the caller's per-state extra; and J itself.
    return 2**bits * (4 * 8 * n + extra_per_state) + 8 * n * n


def _enumeration_plan(
    J: Tensor, external: Tensor | None, chunk: int, extra_per_state: int, budget: float
) -> tuple[Tensor, int]:
    """Validate the inputs; return J as float64 with zero diagonal and the chunk's bit count."""
    if J.ndim != 2 or J.shape[0] != J.shape[1]:
        raise ValueError(f"the coupling matrix must be square, got shape {tuple(J.shape)}")
    n = J.shape[0]
    if not 1 <= n <= MAX_ENUMERATION_N:
        raise ValueError(
            f"exact enumeration needs 1 <= N <= {MAX_ENUMERATION_N} (2^N states), got N={n}"
        )
    if external is not None and external.shape != (n,):
        raise ValueError(f"external must have shape ({n},), got {tuple(external.shape)}")
    bits = _chunk_bits(n, chunk)
    _check_memory(
        f"enumeration with chunks of 2^{bits} states at N={n}",
        _enumeration_bytes(n, bits, extra_per_state),
        budget,
    )
    J0 = J.detach().to("cpu", torch.float64).clone()
    J0.fill_diagonal_(0.0)  # the diagonal is J_D's job
    return J0, bits


@functools.lru_cache(maxsize=4)
def _low_states(bits: int) -> Tensor:
    # Shared by every matrix of an ensemble (read-only); rebuilding it cost half the time
    # of a small enumeration.
    return index_to_states(torch.arange(2**bits), bits).to(torch.float64)


def _min_stabilities(J0: Tensor, external: Tensor | None, bits: int) -> Iterator[Tensor]:
    """For every state in index order, m(s) = min_i s_i (sum_{j!=i} J_ij s_j + ext_i),
    in chunks of 2^bits states.

    With s_i = +-1, s_i h_i = s_i (x_i + J_D s_i) = s_i x_i + J_D (exactly in floating
    point too), and fl(. + J_D) is monotone, so "s_i h_i > kappa for all i" is exactly
    fl(m(s) + J_D) > kappa: one pass serves every (J_D, kappa).
    """
    n = J0.shape[0]
    low = _low_states(bits)  # units 0..bits-1 of every state in a chunk
    low_fields = low @ J0[:, :bits].T  # (2^bits, n): the low units' part of every field
    if external is not None:
        low_fields += external.to("cpu", torch.float64)
    J_high = J0[:, bits:]
    for t in range(2 ** (n - bits)):  # t: the high units' bits
        high = index_to_states(torch.tensor([t]), n - bits)[0].to(torch.float64)
        x = low_fields + J_high @ high
        m = (x[:, :bits] * low).amin(dim=1)
        if n > bits:
            m = torch.minimum(m, (x[:, bits:] * high).amin(dim=1))
        yield m


def enumerate_fixed_points(
    J: Tensor,
    j_d: float = 0.0,
    kappa: float = 0.0,
    external: Tensor | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
    return_states: bool = False,
    limit: int = 10_000,
    memory_budget: float = MEMORY_BUDGET,
) -> Enumeration:
    """Exactly count the s in {-1,+1}^N with s_i h_i > kappa for every i (strict), where
    h_i = sum_{j!=i} J_ij s_j + J_D s_i + external_i; the diagonal of J is ignored.

    Vectorised over chunks of `chunk` states (float64, memory bounded by the chunk).
    return_states: also return the first `limit` fixed points (index order, see
    `index_to_states`).
    """
    check_finite("j_d", j_d)
    check_finite("kappa", kappa)
    check_count("limit", limit, minimum=0)
    J0, bits = _enumeration_plan(J, external, chunk, 1, memory_budget)
    _check_memory(f"returning up to {limit} states", limit * J0.shape[0], memory_budget)
    count, found = 0, []
    for t, m in enumerate(_min_stabilities(J0, external, bits)):
        ok = (m + j_d) > kappa
        if return_states and count < limit:
            idx = ok.nonzero().squeeze(1)[: limit - count] + t * 2**bits
            found.append(idx)
        count += int(ok.sum())
    states = None
    if return_states:
        idx = torch.cat(found) if found else torch.zeros(0, dtype=torch.int64)
        states = index_to_states(idx, J0.shape[0])
    return Enumeration(count, states)


def count_fixed_points(
    J: Tensor,
    j_d_values: Sequence[float],
    kappas: Sequence[float] = (0.0,),
    external: Tensor | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
    memory_budget: float = MEMORY_BUDGET,
) -> Tensor:
    """(len(j_d_values), len(kappas)) int64 exact counts, all from one enumeration pass."""
    _check_values("j_d_values", j_d_values)
    _check_values("kappas", kappas)
    J0, bits = _enumeration_plan(J, external, chunk, _grid_bytes(len(j_d_values)), memory_budget)
    jd = torch.tensor(list(j_d_values), dtype=torch.float64).unsqueeze(1)
    kap = torch.tensor(list(kappas), dtype=torch.float64).expand(len(jd), -1).contiguous()
    counts = torch.zeros(kap.shape, dtype=torch.int64)
    for m in _min_stabilities(J0, external, bits):
        # fl(m + J_D) is monotone in m, so sorting once per chunk answers every (J_D, kappa)
        # with a binary search: few large ops, memory linear in the J_D grid.
        v = m.sort().values + jd  # (len(j_d), chunk), rows sorted
        counts += m.numel() - torch.searchsorted(v, kap, right=True)
    return counts


def _grid_bytes(n_j_d: int) -> int:
    """Per-state bytes of `count_fixed_points`'s grid: the sorted chunk and its J_D shifts."""
    return 8 * (2 + n_j_d)


@dataclass(frozen=True)
class CountRow:
    """Fixed-point statistics over an ensemble of J at one (N, J_D, kappa)."""

    n: int
    j_d: float
    kappa: float
    samples: int
    mean_count: float
    stderr_count: float  # standard error of the mean count
    complexity: float  # (1/N) ln E#FP (-inf when no sample has a fixed point)
    quenched: float  # (1/N) E ln #FP; nan when some sample has none
    zero_fraction: float  # fraction of samples without any fixed point
    annealed: float  # ln 2 + ln Phi(J_D - kappa), N -> inf
    annealed_n: float  # (1/N) ln E#FP exactly at this N (field variance (N-1)/N)


def count_experiment(
    sizes: Sequence[int] = (8, 10, 12, 14, 16, 18, 20),
    j_d_values: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
    kappas: Sequence[float] = (0.0, 0.5),
    *,
    n_samples: int = 40,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
    memory_budget: float = MEMORY_BUDGET,
    log: Log | None = None,
) -> list[CountRow]:
    """Exact counts over `n_samples` random J per size, for every (J_D, kappa)."""
    _check_sizes("sizes", sizes, minimum=2)
    _check_values("j_d_values", j_d_values)
    _check_values("kappas", kappas)
    check_count("n_samples", n_samples, minimum=1)
    for n in sizes:  # every size validated before the first enumeration
        if n > MAX_ENUMERATION_N:
            raise ValueError(f"exact enumeration needs N <= {MAX_ENUMERATION_N}, got N={n}")
        _check_memory(
            f"enumeration at N={n}",
            _enumeration_bytes(n, _chunk_bits(n, chunk), _grid_bytes(len(j_d_values))),
            memory_budget,
        )
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        gen = _generator(seed, n)
        counts = torch.stack(
            [
                count_fixed_points(
                    random_coupling(n, gen),
                    j_d_values,
                    kappas,
                    chunk=chunk,
                    memory_budget=memory_budget,
                )
                for _ in range(n_samples)
            ]
        ).to(torch.float64)  # (samples, j_d, kappa)
        mean = counts.mean(dim=0)
        # One sample has no spread to estimate: nan, not a misleading zero.
        se = counts.std(dim=0) / math.sqrt(n_samples) if n_samples > 1 else mean * math.nan
        for a, j_d in enumerate(j_d_values):
            for b, kappa in enumerate(kappas):
                c = counts[:, a, b]
                zero = float((c == 0).double().mean())
                rows.append(
                    CountRow(
                        n=n,
                        j_d=float(j_d),
                        kappa=float(kappa),
                        samples=n_samples,
                        mean_count=float(mean[a, b]),
                        stderr_count=float(se[a, b]),
                        complexity=math.log(mean[a, b]) / n if mean[a, b] > 0 else -math.inf,
                        quenched=float(c.log().mean()) / n if zero == 0 else math.nan,
                        zero_fraction=zero,
                        annealed=annealed_complexity(j_d, kappa),
                        annealed_n=math.log(annealed_count(n, j_d, kappa, finite_size=True)) / n,
                    )
                )
        if log:
            log(f"count: N={n}, {n_samples} couplings, {time.perf_counter() - t0:.1f}s")
    return rows


def plot_count(rows: Sequence[CountRow], path: Path) -> None:
    """Measured (1/N) ln E#FP and (1/N) E ln #FP against the annealed curve, one panel per kappa."""
    kappas = sorted({r.kappa for r in rows})
    sizes = sorted({r.n for r in rows})
    colors = _colors("viridis", len(sizes))
    with _figure(path, 1, len(kappas), (4.6 * len(kappas), 3.8)) as axes:
        for ax, kappa in zip(axes[0], kappas):
            sel = [r for r in rows if r.kappa == kappa]
            grid = np.linspace(min(r.j_d for r in sel), max(r.j_d for r in sel), 200)
            ax.plot(
                grid,
                [annealed_complexity(x, kappa) for x in grid],
                "k-",
                lw=1.5,
                label=r"annealed $\ln 2+\ln\Phi(J_D-\kappa)$",
            )
            for n, col in zip(sizes, colors):
                rn = sorted((r for r in sel if r.n == n), key=lambda r: r.j_d)
                x = [r.j_d for r in rn]
                ax.plot(x, [r.annealed_n for r in rn], ":", color=col, lw=1)
                ax.plot(
                    x,
                    [r.complexity if math.isfinite(r.complexity) else np.nan for r in rn],
                    "o",
                    color=col,
                    ms=4,
                    label=f"N={n}",
                )
                ax.plot(x, [r.quenched for r in rn], "s", mfc="none", color=col, ms=5)
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_xlabel(r"$J_D$")
            ax.set_title(rf"$\kappa={kappa:g}$")
        axes[0][0].set_ylabel("complexity")
        axes[0][0].plot([], [], "ks", mfc="none", label=r"quenched $\frac{1}{N}E\ln\#$")
        axes[0][0].plot([], [], "k:", label="exact E# at N")
        axes[0][0].legend(fontsize=7, loc="lower right")
        axes[0][0].figure.suptitle(
            r"fixed points: dots $\frac{1}{N}\ln E\#$, squares $\frac{1}{N}E\ln\#$", fontsize=10
        )


# ----- 2. accessibility -----------------------------------------------------------------
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
    n_couplings: int = 2,
    n_starts: int = 16,
    max_sweeps: int = 100,
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
    _check_values("values", values)
    check_count("n_couplings", n_couplings, minimum=1)
    check_count("n_starts", n_starts, minimum=1)
    check_count("max_sweeps", max_sweeps, minimum=1)
    check_finite("j_d", j_d)
    _check_memory(f"{schedule} {model} at N={n}", access_memory(n, model, schedule), memory_budget)
    dtype = _dtype_for(schedule)
    modules = 2 if model == "chain" else 1
    results: list[list[tuple[Tensor, Tensor, Tensor, float, float]]] = [[] for _ in values]
    for c in range(n_couplings):
        gen = _generator(seed, n, MODELS.index(model), c)
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
                generator=_generator(seed, n, MODELS.index(model), c, k, 1),
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
    """First value where the converged fraction reaches `level` (linear interpolation);
    nan if it never does."""
    pairs = sorted(zip(values, fractions))
    for (x0, y0), (x1, y1) in zip(pairs, pairs[1:]):
        if y0 < level <= y1:
            return x0 + (level - y0) * (x1 - x0) / (y1 - y0)
    return pairs[0][0] if pairs and pairs[0][1] >= level else math.nan


def access_experiment(
    j_d_values: Sequence[float] = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5),
    lambdas: Sequence[float] = (0.0, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0),
    *,
    sync_sizes: Sequence[int] = (250, 1000, 4000),
    async_sizes: Sequence[int] = (100, 300, 900),
    chain_sizes: Sequence[int] = (100, 300),
    chain_schedules: Sequence[str] = ("synchronous", "sequential", "asynchronous"),
    n_couplings: int = 2,
    n_starts: int = 16,
    max_sweeps: int = 100,
    seed: int = 0,
    memory_budget: float = MEMORY_BUDGET,
    log: Log | None = None,
) -> list[AccessRow]:
    """Accessibility versus J_D (synchronous and asynchronous) and, for the two-module
    chain at J_D = 0, versus lambda. Every cell is validated before any runs."""
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
                _check_memory(
                    f"{schedule} {model} at N={n}",
                    access_memory(n, model, schedule),
                    memory_budget,
                )
                plan.append((model, schedule, n))
    if not plan:
        raise ValueError("no sizes given: set at least one of sync, async or chain sizes")
    _check_values("j_d_values", j_d_values)
    _check_values("lambdas", lambdas)
    rows = []
    for model, schedule, n in plan:
        t0 = time.perf_counter()
        rows += accessibility(
            n,
            lambdas if model == "chain" else j_d_values,
            model=model,
            schedule=schedule,
            n_couplings=n_couplings,
            n_starts=n_starts,
            max_sweeps=max_sweeps,
            seed=seed,
            memory_budget=memory_budget,
        )
        if log:
            log(f"access: {model} {schedule} N={n}: {time.perf_counter() - t0:.1f}s")
    return rows


def _transitions(rows: Sequence[AccessRow]) -> dict[tuple[str, str, int], float]:
    keys = sorted({(r.model, r.schedule, r.n) for r in rows})
    out = {}
    for key in keys:
        sel = [r for r in rows if (r.model, r.schedule, r.n) == key]
        out[key] = transition_point([r.value for r in sel], [r.converged for r in sel])
    return out


def plot_access(rows: Sequence[AccessRow], path: Path, max_sweeps: int | None = None) -> None:
    """Converged fraction and median sweeps: versus J_D (one module), versus lambda (chain)."""
    models = [m for m in MODELS if any(r.model == m for r in rows)]
    with _figure(path, 2, len(models), (5.2 * len(models), 6.6)) as axes:
        for col, model in enumerate(models):
            _draw_access(rows, axes, col, model, max_sweeps)


def _draw_access(
    rows: Sequence[AccessRow], axes: Any, col: int, model: str, max_sweeps: int | None
) -> None:
    styles = {"synchronous": "-o", "sequential": "-.^", "asynchronous": "--s"}
    short = {"synchronous": "sync", "sequential": "seq", "asynchronous": "async"}
    sel = [r for r in rows if r.model == model]
    sizes = sorted({r.n for r in sel})
    colors = dict(zip(sizes, _colors("plasma", len(sizes), 0.85)))
    for schedule in [s for s in SCHEDULES if any(r.schedule == s for r in sel)]:
        for n in sizes:
            rn = sorted(
                (r for r in sel if r.schedule == schedule and r.n == n), key=lambda r: r.value
            )
            if not rn:
                continue
            x = [r.value for r in rn]
            kw = {"color": colors[n], "ms": 3.5, "lw": 1.2}
            axes[0][col].errorbar(
                x,
                [r.converged for r in rn],
                [r.stderr for r in rn],
                fmt=styles[schedule],
                capsize=2,
                label=f"{short[schedule]} N={n}",
                **kw,
            )
            axes[1][col].plot(x, [r.median_sweeps for r in rn], styles[schedule], **kw)
            if model == "chain" and schedule == "synchronous":
                # Where the fully synchronous chain fails, show how: a period-2 swap.
                axes[0][col].plot(
                    x,
                    [r.two_cycle for r in rn],
                    ":x",
                    color=colors[n],
                    lw=1,
                    ms=4,
                    label=f"sync N={n}: on a 2-cycle",
                )
    name = r"$J_D$" if model == "single" else r"$\lambda$ (two modules, $J_D=0$)"
    axes[0][col].set_title("one module" if model == "single" else "two-module chain")
    axes[0][col].set_ylabel("fraction reaching a fixed point")
    axes[0][col].legend(fontsize=6.5, ncol=2)
    axes[1][col].set_yscale("log")
    axes[1][col].set_ylabel("median sweeps (converged runs)")
    axes[1][col].set_xlabel(name)
    if max_sweeps:
        axes[1][col].axhline(max_sweeps, color="grey", lw=0.5)


# ----- 3. geometry ----------------------------------------------------------------------
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
    overlaps: list[OverlapRow]
    returns: list[ReturnRow]
    reached: dict[float, float]  # J_D -> fraction of random starts that reached a fixed point


def reached_fixed_points(
    net: Recurrent,
    n_starts: int,
    *,
    schedule: str = "asynchronous",
    max_sweeps: int = 100,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Relax random starts of a one-module net; (starts, final states) of the converged runs."""
    n = net.sizes[0]
    starts = random_states(n_starts, n, generator, torch.float64)
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
    radii: Sequence[float] = (0.0, 1.0, 2.0),
    *,
    trials: int = 8,
    schedule: str = "asynchronous",
    max_sweeps: int = 100,
    generator: torch.Generator,
) -> list[ReturnRow]:
    """For each d: flip d random units of each fixed point (`trials` times), relax, and
    measure how often the run ends at a fixed point within r*d of that fixed point s*.

    A dense cluster keeps nearby starts near (r = 1 succeeds, r = 0 need not); an
    isolated fixed point either pulls them back (r = 0) or loses them.
    """
    n = fixed_points.shape[1]
    for d in distances:
        check_count("distance", d, minimum=1)
        if d > n:
            raise ValueError(f"distance {d} exceeds N={n}")
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
    radii: Sequence[float] = (0.0, 1.0, 2.0),
    n_bases: int = 8,
    trials: int = 8,
    schedule: str = "asynchronous",
    max_sweeps: int = 100,
    seed: int = 0,
    memory_budget: float = MEMORY_BUDGET,
    log: Log | None = None,
) -> GeometryResult:
    """Overlaps and return fractions on one J (same for every J_D) of n units."""
    check_count("n", n, minimum=2)
    _check_values("j_d_values", j_d_values)
    check_count("n_starts", n_starts, minimum=2)
    check_count("n_bases", n_bases, minimum=1)
    check_count("trials", trials, minimum=1)
    check_count("max_sweeps", max_sweeps, minimum=1)
    check_choice("schedule", schedule, SCHEDULES)
    _check_values("radii", radii)
    if any(r < 0 for r in radii):
        raise ValueError(f"radii must be >= 0, got {list(radii)}")
    if len(distances) == 0:
        raise ValueError("distances is empty; give at least one Hamming distance")
    for d in distances:
        check_count("distance", d, minimum=1)
        if d > n:
            raise ValueError(f"distance {d} exceeds N={n}")
    batch = max(n_starts, n_bases * trials)
    _check_memory(
        f"geometry at N={n} with {n_starts} starts",
        access_memory(n, "single", "asynchronous") + 8 * (n_starts**2 + 4 * batch * n),
        memory_budget,
    )
    J = random_coupling(n, _generator(seed, n))
    overlap_rows: list[OverlapRow] = []
    return_rows: list[ReturnRow] = []
    reached = {}
    for k, j_d in enumerate(j_d_values):
        t0 = time.perf_counter()
        net = Recurrent.from_matrices([J], j_d=j_d)
        run_gen = _generator(seed, n, k)
        starts, fps = reached_fixed_points(
            net, n_starts, schedule=schedule, max_sweeps=max_sweeps, generator=run_gen
        )
        reached[float(j_d)] = fps.shape[0] / n_starts
        overlap_rows += [OverlapRow(float(j_d), "fp-fp", q) for q in overlaps(fps).tolist()]
        overlap_rows += [
            OverlapRow(float(j_d), "start-fp", q) for q in overlaps(starts, fps).tolist()
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


def plot_geometry(result: GeometryResult, path: Path) -> None:
    """Overlap histograms; fraction back at a fixed point within r*d; final distance / d."""
    with _figure(path, 1, 3, (14, 3.9)) as axes:
        _draw_geometry(result, *axes[0])


def _legend(ax: Any, **kw: Any) -> None:
    """A legend only where something was drawn (no fixed point reached: empty panels)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _draw_geometry(result: GeometryResult, ax0: Any, ax1: Any, ax2: Any) -> None:
    j_ds = sorted(result.reached)
    colors = dict(zip(j_ds, _colors("viridis", len(j_ds), 0.85)))
    bins = np.linspace(-1, 1, 81)
    for j_d in j_ds:
        for kind, style in (("fp-fp", "stepfilled"), ("start-fp", "step")):
            q = [r.q for r in result.overlaps if r.j_d == j_d and r.kind == kind]
            if q:
                ax0.hist(
                    q,
                    bins=bins,
                    density=True,
                    histtype=style,
                    color=colors[j_d],
                    alpha=0.45 if style == "stepfilled" else 1.0,
                    lw=1.2,
                    label=f"$J_D$={j_d:g} {kind}",
                )
    ax0.set_xlabel("overlap q")
    ax0.set_ylabel("density")
    ax0.set_title("filled: two reached fixed points; line: start and its fixed point", fontsize=8.5)
    _legend(ax0, fontsize=7)
    radii = sorted({r.radius for r in result.returns})
    styles = dict(zip(radii, ["o:", "s--", "^-", "v-.", "d-"]))
    for j_d in j_ds:
        for radius in radii:
            sel = sorted(
                (r for r in result.returns if r.j_d == j_d and r.radius == radius),
                key=lambda r: r.d,
            )
            if sel:
                ax1.plot(
                    [r.d / r.n for r in sel],
                    [r.fraction for r in sel],
                    styles.get(radius, "x-"),
                    color=colors[j_d],
                    ms=3.5,
                    label=f"$J_D$={j_d:g}, r={radius:g}",
                )
        sel = sorted(
            (r for r in result.returns if r.j_d == j_d and r.radius == radii[0]), key=lambda r: r.d
        )
        if sel:
            ax2.plot(
                [r.d / r.n for r in sel],
                [r.mean_distance / r.d for r in sel],
                "o-",
                color=colors[j_d],
                ms=3.5,
                label=f"$J_D$={j_d:g}",
            )
    ax1.set_xscale("log")
    ax1.set_xlabel("d / N (units flipped in a reached fixed point s*)")
    ax1.set_ylabel("fraction ending at a fixed point within r·d of s*")
    _legend(ax1, fontsize=6.5, ncol=2)
    ax2.axhline(1, color="grey", lw=0.6)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("d / N")
    ax2.set_ylabel("(distance of the new fixed point to s*) / d")
    ax2.set_title("1: stays where it was put; <1: pulled back; >1: runs off", fontsize=8.5)
    _legend(ax2, fontsize=7)


# ----- CLI --------------------------------------------------------------------------------
T = TypeVar("T")


def _comma_list(cast: Callable[[str], T], what: str) -> Callable[[str], list[T]]:
    """An argparse type for comma-separated values, e.g. "0,0.25,0.5" or "100,400"."""

    def parse(text: str) -> list[T]:
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            msg = f"expected comma-separated {what}, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None

    return parse


_floats = _comma_list(float, "numbers")
_ints = _comma_list(int, "integers")


def _strings(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _run_dir(args: argparse.Namespace, name: str) -> Path:
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / (f"theory-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    write_text(out / "config.json", json.dumps(config, indent=2, default=str) + "\n")
    return out


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # stdout keeps only the summary


def _budget(args: argparse.Namespace) -> float:
    if not (args.memory_gib > 0 and math.isfinite(args.memory_gib)):
        raise ValueError(f"--memory-gib={args.memory_gib} is not valid; it must be > 0")
    return args.memory_gib * 2**30


def _cmd_count(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    rows = count_experiment(  # validates everything before any work or folder
        args.sizes,
        args.j_d,
        args.kappa,
        n_samples=args.samples,
        seed=args.seed,
        chunk=args.chunk,
        memory_budget=_budget(args),
        log=_progress,
    )
    out = _run_dir(args, "count")
    _write_csv(out / "count.csv", rows)
    plot_count(rows, out / "count.png")
    n_max = max(args.sizes)
    print(
        f"theory count: N={','.join(map(str, args.sizes))}, {args.samples} couplings each, "
        f"{time.perf_counter() - t0:.1f}s -> {out}"
    )
    for r in rows:
        if r.n == n_max and r.kappa == args.kappa[0]:
            print(
                f"  N={r.n} J_D={r.j_d:<5g} kappa={r.kappa:g}: (1/N)ln E#={r.complexity:+.3f} "
                f"(exact {r.annealed_n:+.3f}, N->inf {r.annealed:+.3f}), "
                f"(1/N)E ln#={r.quenched:+.3f}"
            )
    return 0


def _cmd_access(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    sync_sizes, async_sizes = list(args.sync_sizes), list(args.async_sizes)
    if args.large:
        sync_sizes += [] if LARGE_SYNC in sync_sizes else [LARGE_SYNC]
        async_sizes += [] if LARGE_ASYNC in async_sizes else [LARGE_ASYNC]
    rows = access_experiment(
        args.j_d,
        args.lambdas,
        sync_sizes=sync_sizes,
        async_sizes=async_sizes,
        chain_sizes=args.chain_sizes,
        chain_schedules=args.chain_schedules,
        n_couplings=args.couplings,
        n_starts=args.starts,
        max_sweeps=args.max_sweeps,
        seed=args.seed,
        memory_budget=_budget(args),
        log=_progress,
    )
    out = _run_dir(args, "access")
    _write_csv(out / "access.csv", rows)
    plot_access(rows, out / "access.png", args.max_sweeps)
    print(f"theory access: {time.perf_counter() - t0:.1f}s -> {out}")
    for (model, schedule, n), x in _transitions(rows).items():
        name = "J_D" if model == "single" else "lambda"
        print(f"  {model:6s} {schedule:12s} N={n:<6d} half the runs converge at {name} ~ {x:.3g}")
    return 0


def _cmd_geometry(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    res = geometry_experiment(
        args.n,
        args.j_d,
        n_starts=args.starts,
        distances=args.distances,
        radii=args.radii,
        n_bases=args.bases,
        trials=args.trials,
        schedule=args.schedule,
        max_sweeps=args.max_sweeps,
        seed=args.seed,
        memory_budget=_budget(args),
        log=_progress,
    )
    out = _run_dir(args, "geometry")
    if res.overlaps:
        _write_csv(out / "overlaps.csv", res.overlaps)
    if res.returns:
        _write_csv(out / "returns.csv", res.returns)
    plot_geometry(res, out / "geometry.png")
    print(f"theory geometry: N={args.n}, {args.schedule}, {time.perf_counter() - t0:.1f}s -> {out}")
    for j_d, frac in res.reached.items():
        q = np.array([r.q for r in res.overlaps if r.j_d == j_d and r.kind == "fp-fp"])
        q0 = np.array([r.q for r in res.overlaps if r.j_d == j_d and r.kind == "start-fp"])
        ret = {(r.d, r.radius): r.fraction for r in res.returns if r.j_d == j_d}
        d_mid = sorted({d for d, _ in ret})[len({d for d, _ in ret}) // 2] if ret else None
        msg = f"  J_D={j_d:g}: reached {frac:.2f}"
        if q.size:
            msg += f", q(fp,fp)={q.mean():+.3f}±{q.std():.3f}"
        if q0.size:
            msg += f", q(start,fp)={q0.mean():.3f}"
        if d_mid is not None:
            msg += f", d={d_mid}: " + ", ".join(
                f"r={r:g}:{ret[(d_mid, r)]:.2f}" for r in args.radii
            )
        print(msg)
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Register `count`, `access` and `geometry` on the `darnn theory` subparsers."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--out",
            default=None,
            help="run folder for CSV + PNG (default runs/theory-<name>-<timestamp>)",
        )
        p.add_argument("--seed", type=int, default=0, help="seed of couplings and starts")
        p.add_argument(
            "--memory-gib",
            type=float,
            default=MEMORY_BUDGET / 2**30,
            help="refuse grids whose estimated memory exceeds this (GiB)",
        )

    p = subparsers.add_parser(
        "count",
        help="exact fixed-point counts vs the annealed complexity",
        description="Enumerate all 2^N states of random fully asymmetric J (N <= 24) and "
        "compare (1/N) ln E#FP and (1/N) E ln #FP with ln 2 + ln Phi(J_D - kappa).",
    )
    p.add_argument(
        "--sizes",
        type=_ints,
        default=[8, 10, 12, 14, 16, 18, 20],
        help=f"comma-separated N (each <= {MAX_ENUMERATION_N})",
    )
    p.add_argument(
        "--j-d",
        type=_floats,
        default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5],
        help="comma-separated self-couplings J_D",
    )
    p.add_argument("--kappa", type=_floats, default=[0.0, 0.5], help="comma-separated margins")
    p.add_argument("--samples", type=int, default=40, help="random couplings per N")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="states per chunk")
    common(p)
    p.set_defaults(func=_cmd_count)

    p = subparsers.add_parser(
        "access",
        help="fraction of random starts that reach a fixed point",
        description="Relax random starts with the synchronous and asynchronous dynamics "
        "versus J_D, and a two-module chain at J_D = 0 versus lambda.",
    )
    p.add_argument(
        "--j-d",
        type=_floats,
        default=[0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5],
        help="comma-separated J_D for the single module",
    )
    p.add_argument(
        "--lambdas",
        type=_floats,
        default=[0.0, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0],
        help="comma-separated inter-module couplings for the chain",
    )
    # Asynchronous sweeps cost ~6e-9 N^2 s per run on this CPU (a NumPy loop over units),
    # synchronous ones a matrix product: the default sizes fit in a few minutes.
    p.add_argument(
        "--sync-sizes",
        type=_ints,
        default=[250, 1000, 4000],
        help="comma-separated N for the synchronous schedule",
    )
    p.add_argument(
        "--async-sizes",
        type=_ints,
        default=[100, 300, 900],
        help="comma-separated N for the asynchronous schedule",
    )
    p.add_argument("--chain-sizes", type=_ints, default=[100, 300], help="units per module")
    p.add_argument(
        "--chain-schedules",
        type=_strings,
        default=["synchronous", "sequential", "asynchronous"],
        help="comma-separated schedules for the chain",
    )
    p.add_argument(
        "--large",
        action="store_true",
        help="add N=10000 (synchronous) and N=1600 (asynchronous): ~7 more minutes",
    )
    p.add_argument("--couplings", type=int, default=2, help="random J per size")
    p.add_argument("--starts", type=int, default=16, help="random starts per coupling")
    p.add_argument("--max-sweeps", type=int, default=100)
    common(p)
    p.set_defaults(func=_cmd_access)

    p = subparsers.add_parser(
        "geometry",
        help="overlaps and local density of reached fixed points",
        description="Overlaps between fixed points reached from random starts, and the "
        "fraction of starts at distance d from one that end at a fixed point within r*d.",
    )
    p.add_argument("--n", type=int, default=400, help="units")
    p.add_argument("--j-d", type=_floats, default=[0.75, 1.0, 1.5])
    p.add_argument("--schedule", default="asynchronous", choices=SCHEDULES)
    p.add_argument("--starts", type=int, default=64, help="random starts per J_D")
    p.add_argument(
        "--distances", type=_ints, default=[1, 2, 4, 8, 16, 32, 64, 128], help="Hamming distances d"
    )
    p.add_argument("--radii", type=_floats, default=[0.0, 1.0, 2.0], help="return radii r (x d)")
    p.add_argument("--bases", type=int, default=8, help="reached fixed points to perturb")
    p.add_argument("--trials", type=int, default=8, help="perturbations per fixed point and d")
    p.add_argument("--max-sweeps", type=int, default=100)
    common(p)
    p.set_defaults(func=_cmd_geometry)
