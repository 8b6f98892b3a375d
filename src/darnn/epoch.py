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
        """Count one batch's statistics."""
        b = stats.batch_size
        self.seen += b
        self.correct = self.correct + stats.correct
        self.unstable = self.unstable + stats.unstable * b
        self.converged = self.converged + stats.converged
        self.sweeps = self.sweeps + stats.free_sweeps

    def to_state(self) -> dict[str, float]:
        """The counters as plain floats (what a checkpoint stores)."""
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}

    def fraction(self, name: str) -> float:
        """Counter ``name`` per sample seen, e.g. ``fraction("correct")``: training accuracy."""
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
    """Train one epoch (or its rest): one `learning_step` per batch, in place.

    Runs batches ``start_batch``, ``start_batch + 1``, ... of the epoch whose sample order
    is ``order``.

    Args:
        net: The network, updated in place.
        X: (n, D) features.
        y: (n,) int64 labels in 0..C-1.
        cfg: The learning config.
        batch_size: Samples per batch (the last batch may be smaller).
        order: (n,) permutation of the rows of X.
        generator: Stream of the dynamics' random draws (asynchronous schedule, stochastic
            sweeps); `seeded_generators` gives the one `darnn train` uses.
        start_batch: First batch to run (resuming inside an epoch).
        counters: Counters to add to (resuming), else new ones.
        threads: CPU threads (None: decided by work size, see `threads_for`).
        step: `learning_step` or its data-parallel form (darnn.distributed).
        after_batch: Called as ``after_batch(batches_done, counters)`` after every batch;
            returning True stops the epoch there.

    Returns:
        The counters and the number of batches done.
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
