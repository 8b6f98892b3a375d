"""Pieces every theory experiment shares: seeding, random couplings and states, checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..checks import check_count, check_finite
from ..couplings import gaussian_coupling
from ..memory import available_memory

MEMORY_BUDGET = 4 * 2**30  # bytes; every experiment checks its estimate against this first
MAX_SWEEPS = 100  # sweep budget of every relaxation, unless told otherwise

Log = Callable[[str], None]


def seeded_generator(seed: int, *keys: int) -> torch.Generator:
    """An independent CPU generator for (seed, keys): any cell of a grid can be rerun alone."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def check_memory(what: str, nbytes: float, budget: float) -> None:
    """ValueError if the estimate ``nbytes`` for ``what`` exceeds ``budget``."""
    if nbytes > budget:
        raise ValueError(
            f"{what} needs about {nbytes / 2**30:.2f} GiB, over the memory budget of "
            f"{budget / 2**30:.2f} GiB; use smaller sizes or raise the budget"
        )


def check_values(name: str, values: Sequence[float]) -> None:
    """A non-empty sequence of finite numbers."""
    if len(values) == 0:
        raise ValueError(f"{name} is empty; give at least one value")
    for v in values:
        check_finite(name, v)


def check_sizes(name: str, sizes: Sequence[int], minimum: int = 2) -> None:
    """A non-empty sequence of integers >= ``minimum``."""
    if len(sizes) == 0:
        raise ValueError(f"{name} is empty; give at least one size")
    for n in sizes:
        check_count(name, n, minimum=minimum)


def random_coupling(
    n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Dense (n, n) fully asymmetric Gaussian J, entries N(0, 1/n), zero diagonal.

    Dense by design (the theory lab studies fully connected J at small N; every experiment
    checks its own estimate against its memory budget first). As a last guard the draw
    (float32, its masked copy, the ``dtype`` result) is checked against the memory
    available before allocating: a huge N is a clear ValueError, not an allocator failure.

    Args:
        n: N, the number of units.
        generator: The random stream (the same stream gives the same J).
        dtype: The result's dtype.

    Raises:
        ValueError: The matrix would not fit in the available memory.
    """
    item = torch.empty((), dtype=dtype).element_size()
    need, room = n * n * (8 + item), available_memory()
    if room is not None and need > room:
        raise ValueError(
            f"a dense {n} x {n} coupling needs about {need / 2**30:.2f} GiB, but only "
            f"{room / 2**30:.2f} GiB of memory is available; use a smaller N"
        )
    c = gaussian_coupling(n, n, strength=1.0, density=1.0, generator=generator, zero_diagonal=True)
    return c.to_dense().to(dtype)


def random_states(batch: int, n: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """(batch, n) uniformly random configurations in {-1, +1}."""
    return torch.where(torch.rand(batch, n, generator=generator) < 0.5, -1.0, 1.0).to(dtype)


def overlaps(a: Tensor, b: Tensor | None = None) -> Tensor:
    """Overlaps q = (1/N) s . s': row by row for (a, b); for a alone, every pair i < j."""
    n = a.shape[1]
    if b is not None:
        return (a * b).sum(dim=1) / n
    gram = a @ a.T / n
    i, j = torch.triu_indices(a.shape[0], a.shape[0], offset=1)
    return gram[i, j]
