"""How many CPU threads torch uses: decided here, by work size, for every door.

A training step or a small evaluation is a few hundred small kernels. With two OpenMP
threads each kernel pays a fork/join barrier; on a machine where another process keeps a
core busy, the thread on that core is descheduled and every barrier waits for it: measured
on a 2-core VM, batch-16 steps ran 5-30x slower with 2 threads than with 1 under load, and
at most ~1.4x faster when idle. Large products (dense N in the thousands times a batch of
hundreds) amortise the barrier, so they get every core.

The user's setting always wins: an explicit ``threads`` value (``train.threads``, the
estimator's ``n_threads``), else ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

# Multiply-adds in the largest product of one kernel call below which one thread is used.
# A dense N=1600 batch-16 product (4e7) stays single-threaded; N=8192 at batch 512 (3e10)
# or a CSR N=6000 evaluation chunk does not.
PARALLEL_WORK = 5e7


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def user_threads() -> int | None:
    """OMP_NUM_THREADS if it is set to a positive integer, else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def choose_threads(work: float, requested: int | None = None) -> int:
    """Threads for kernels of ``work`` multiply-adds each (explicit > env > by size)."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads={requested!r} is not valid; it must be an integer >= 1")
        return requested
    return user_threads() or (1 if work < PARALLEL_WORK else available_cores())


def product_work(nnz: int, batch: int) -> float:
    """Multiply-adds of one coupling product: its non-zeros times the batch."""
    return float(nnz) * batch


@contextlib.contextmanager
def using_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
