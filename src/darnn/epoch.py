"""One epoch of training: the loop shared by ``darnn train`` and `DARNClassifier`.

A seed fixes everything random in training: `seeded_generators` derives two independent
streams from it, one for the order of the samples in each epoch and one for the dynamics
(the asynchronous schedule's unit orders). The network itself is built with the same seed.
Both doors call `fit_epoch` with these streams, so the same data, config and seed give the
same weights through either (tested).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import LearningConfig
from .couplings import Coupling
from .learning import StepStats, learning_step
from .network import Network
from .threads import choose_threads, using_threads


def seeded_generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Independent CPU generators for the epoch order and the dynamics, from one seed."""
    streams = np.random.SeedSequence(seed).spawn(2)
    order, dynamics = (int(s.generate_state(1)[0]) for s in streams)
    return torch.Generator().manual_seed(order), torch.Generator().manual_seed(dynamics)


def threads_for(net: Network, batch: int, requested: int | None = None) -> int:
    """CPU threads for relaxing batches of ``batch`` samples on ``net`` (see darnn.threads)."""
    if net.device.type != "cpu":
        return torch.get_num_threads()
    nnz = max(m.nnz for m in net.modules() if isinstance(m, Coupling))
    return choose_threads(float(nnz) * batch, requested)


@dataclass
class EpochCounters:
    """Running sums over the batches of an epoch (tensors, so no per-batch device sync)."""

    seen: int = 0
    correct: float | Tensor = 0.0
    unstable: float | Tensor = 0.0  # unstable fraction times batch size
    converged: float | Tensor = 0.0
    sweeps: float | Tensor = 0.0
    train_time: float = 0.0

    def add(self, stats: StepStats) -> None:
        b = stats.batch_size
        self.seen += b
        self.correct = self.correct + stats.correct
        self.unstable = self.unstable + stats.unstable * b
        self.converged = self.converged + stats.converged
        self.sweeps = self.sweeps + stats.free_sweeps

    def to_state(self) -> dict[str, float]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}

    def fraction(self, name: str) -> float:
        return float(getattr(self, name)) / max(self.seen, 1)


def fit_epoch(
    net: Network,
    X: Tensor,
    y: Tensor,
    cfg: LearningConfig,
    batch_size: int,
    order: Tensor,
    *,
    generator: torch.Generator | None = None,
    start_batch: int = 0,
    counters: EpochCounters | None = None,
    threads: int | None = None,
    step: Callable[..., StepStats] = learning_step,
    after_batch: Callable[[int, EpochCounters], bool] | None = None,
) -> tuple[EpochCounters, int]:
    """Batches ``start_batch``, ``start_batch + 1``, ... of the epoch whose sample order is
    ``order`` (a permutation of the rows of X), one `learning_step` each.

    after_batch(batches_done, counters) is called after every batch; returning True stops
    the epoch there. ``step`` is `learning_step` or its data-parallel form
    (darnn.distributed). Returns the counters and the number of batches done.
    """
    counters = EpochCounters() if counters is None else counters
    n_batches = -(-len(order) // batch_size)
    order = order.to(X.device)
    done = start_batch
    with using_threads(threads_for(net, batch_size, threads)):
        for b in range(start_batch, n_batches):
            tick = time.perf_counter()
            idx = order[b * batch_size : (b + 1) * batch_size]
            counters.add(step(net, X[idx], y[idx], cfg, generator=generator))
            counters.train_time += time.perf_counter() - tick  # the callback's time excluded
            done = b + 1
            if after_batch is not None and after_batch(done, counters):
                break
    return counters, done
