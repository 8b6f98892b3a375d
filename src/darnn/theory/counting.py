"""Counting fixed points: exact enumeration against docs/model.md#annealed-complexity.

A configuration s in {-1,+1}^N is a fixed point at margin kappa when s_i h_i > kappa for
every unit, with h_i = sum_{j!=i} J_ij s_j + J_D s_i (+ an external field). For N <= 24
every one of the 2^N states is checked, vectorised over chunks; the annealed estimate
E#FP = (2 Phi(J_D - kappa))^N is the N -> inf growth rate it is compared with.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from scipy.special import log_ndtr
from torch import Tensor

from ..checks import check_count, check_finite
from .common import (
    MEMORY_BUDGET,
    Log,
    check_memory,
    check_sizes,
    check_values,
    random_coupling,
    seeded_generator,
)

MAX_ENUMERATION_N = 24  # 2^24 states: seconds per matrix; beyond that use sampling
DEFAULT_CHUNK = 2**16  # states per enumeration chunk (a few MB at N = 24)


def annealed_complexity(j_d: float, kappa: float = 0.0) -> float:
    """Annealed complexity ln 2 + ln Phi(J_D - kappa).

    The N -> inf growth rate of the expected number of fixed points
    (docs/model.md#annealed-complexity).
    """
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
    """The log2 of the states per chunk.

    The largest power of two <= chunk (at least 2), at most 2^n.
    """
    check_count("chunk", chunk, minimum=1)
    return min(n, max(1, chunk.bit_length() - 1))


def _enumeration_bytes(n: int, bits: int, extra_per_state: int) -> int:
    # Per state in a chunk: the low-bit states, their fields, the summed fields and the
    # stabilities (float64, N wide each) plus the caller's per-state extra; and J itself.
    return 2**bits * (4 * 8 * n + extra_per_state) + 8 * n * n


def _grid_bytes(n_j_d: int) -> int:
    """Per-state bytes of `count_fixed_points`'s grid: the sorted chunk and its J_D shifts."""
    return 8 * (2 + n_j_d)


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
    check_memory(
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
    """Yield m(s) = min_i s_i (sum_{j!=i} J_ij s_j + ext_i) for every state in index order.

    In chunks of 2^bits states.

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
    """Exactly count the s in {-1,+1}^N with s_i h_i > kappa for every i (strict).

    Here h_i = sum_{j!=i} J_ij s_j + J_D s_i + external_i; the diagonal of J is ignored.

    Vectorised over chunks of `chunk` states (float64, memory bounded by the chunk).

    Args:
        J: (N, N) couplings, N <= 24.
        j_d: The self-coupling J_D.
        kappa: The margin.
        external: (N,) constant external fields, or None.
        chunk: States per chunk (a power of two is used).
        return_states: Also return the first ``limit`` fixed points (index order, see
            `index_to_states`).
        limit: At most this many states are returned.
        memory_budget: Bytes the enumeration may use.

    Returns:
        An `Enumeration`: the count and, if asked, the states (int8 ±1).

    Raises:
        ValueError: A non-square J, N > MAX_ENUMERATION_N, a bad argument, or an estimate
            over ``memory_budget``; checked before any allocation.
    """
    check_finite("j_d", j_d)
    check_finite("kappa", kappa)
    check_count("limit", limit, minimum=0)
    J0, bits = _enumeration_plan(J, external, chunk, 1, memory_budget)
    check_memory(f"returning up to {limit} states", limit * J0.shape[0], memory_budget)
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
    check_values("j_d_values", j_d_values)
    check_values("kappas", kappas)
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


# Operations an enumeration may take (about a day at 10^9 per second): past it a request
# such as --samples 1e8 is refused with its estimate instead of running until killed.
MAX_ENUMERATION_WORK = 1e14


def check_work(sizes: Sequence[int], n_samples: int, grid: int) -> None:
    """Raise ValueError when the enumeration's work exceeds MAX_ENUMERATION_WORK.

    The work: every state's N fields, one comparison per (J_D, kappa) and unit, for every
    sample and size.
    """
    work = n_samples * sum(2.0 ** min(n, 1024) * n * (n + grid) for n in sizes)
    if work > MAX_ENUMERATION_WORK:
        raise ValueError(
            f"counting {n_samples} samples at sizes {list(sizes)[:10]} needs about {work:.2g} "
            f"operations (~{work / 1e9 / 3600:.3g} hours at 10^9 per second), over the cap "
            f"of {MAX_ENUMERATION_WORK:.0e}; use fewer samples or smaller sizes"
        )


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
    """Exact counts over `n_samples` random J per size, for every (J_D, kappa).

    Args:
        sizes: comma-separated N (each <= 24, exact enumeration).
        j_d_values: comma-separated self-couplings J_D.
        kappas: comma-separated margins.
        n_samples: random couplings per N.
        seed: seed of couplings and starts.
        chunk: states per chunk.
        memory_budget: bytes the enumeration may use.
        log: called with one progress line per size.
    """
    check_sizes("sizes", sizes, minimum=2)
    check_values("j_d_values", j_d_values)
    check_values("kappas", kappas)
    check_count("n_samples", n_samples, minimum=1)
    check_work(sizes, n_samples, len(j_d_values) * len(kappas))
    for n in sizes:  # every size validated before the first enumeration
        if n > MAX_ENUMERATION_N:
            raise ValueError(f"exact enumeration needs N <= {MAX_ENUMERATION_N}, got N={n}")
        check_memory(
            f"enumeration at N={n}",
            _enumeration_bytes(n, _chunk_bits(n, chunk), _grid_bytes(len(j_d_values))),
            memory_budget,
        )
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        gen = seeded_generator(seed, n)
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
        rows += _count_rows(n, counts, j_d_values, kappas)
        if log:
            log(f"count: N={n}, {n_samples} couplings, {time.perf_counter() - t0:.1f}s")
    return rows


def _count_rows(
    n: int, counts: Tensor, j_d_values: Sequence[float], kappas: Sequence[float]
) -> list[CountRow]:
    """The statistics of (samples, j_d, kappa) counts at one size, one row per (J_D, kappa)."""
    n_samples = counts.shape[0]
    mean = counts.mean(dim=0)
    # One sample has no spread to estimate: nan, not a misleading zero.
    se = counts.std(dim=0) / math.sqrt(n_samples) if n_samples > 1 else mean * math.nan
    rows = []
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
    return rows
