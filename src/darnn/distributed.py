"""Data-parallel training on torch.distributed (``torchrun``), equal to one process.

Every rank holds the same network (same seed) and draws the same batch order. Rank r
relaxes its slice of each global batch of B samples; the ranks then all-gather the final
states and free fields of the whole batch, and every rank applies the same local rule to
the same full batch. The rule needs nothing else (it is local: a sum over samples of
outer products of these per-sample quantities), so the weights stay identical on every
rank without ever being sent, and equal those of one process with batch B.

Gathering states rather than all-reducing the weight updates sends B x N numbers per
module instead of one update per coupling (N x N dense, nnz sparse); every rank then
repeats the update products, which cost about one sweep of the ~11 a step runs.

Collectives time out after ``train.dist_timeout`` seconds, so a rank that dies makes the
others fail with a clear error instead of hanging.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from . import protocol
from .config import LearningConfig
from .errors import RunError
from .learning import (
    StepStats,
    evaluate,
    label_free_state,
    learn_relaxed,
    protocol_stats,
    two_phase,
)
from .network import Network

T = TypeVar("T")


class DistributedError(RunError):
    """A collective failed: another rank died, was killed, or cannot be reached."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that writes."""
        return self.rank == 0


def launched_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when started as one plain process)."""
    value = os.environ.get("WORLD_SIZE", "1")
    return int(value) if value.isdigit() else 1


def start(device: torch.device, timeout_s: float) -> Ranks | None:
    """Join the job torchrun describes in the environment; None for a single process."""
    if launched_world_size() <= 1:
        return None
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(
                f"could not join the distributed job (RANK={os.environ.get('RANK')}, "
                f"WORLD_SIZE={os.environ.get('WORLD_SIZE')}, MASTER_ADDR="
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}): {exc}. "
                "Check that every machine runs the same torchrun command with the same "
                "--rdzv-endpoint and that the port is reachable."
            ) from None
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def stop(ranks: Ranks | None, orderly: bool = True) -> None:
    """Leave the job.

    After a stop signal the launcher is shutting down too and may no longer serve the
    rendezvous store, where tearing the group down could block until the launcher's SIGKILL:
    then the process just exits (its sockets close with it).
    """
    if ranks is not None and orderly and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def _collective(ranks: Ranks) -> Iterator[None]:
    """A failed collective (a rank died, or train.dist_timeout passed) as a clear error."""
    try:
        yield
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise DistributedError(
            f"rank {ranks.rank} of {ranks.world} lost contact with the other ranks ({detail}). "
            "Another process failed, was killed or timed out (train.dist_timeout). The run "
            "directory keeps its last checkpoint: continue with darnn train --resume RUN_DIR."
        ) from None


def from_main(ranks: Ranks | None, work: Callable[[], T]) -> T:
    """``work()`` run on rank 0 only; its result, or the user error it raised, on every rank."""
    if ranks is None:
        return work()
    box: list[Any] = [None]
    if ranks.main:
        try:
            box[0] = ("ok", work())
        except RunError as exc:
            box[0] = ("error", exc)
    with _collective(ranks):
        dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value  # type: ignore[no-any-return]


def any_rank(ranks: Ranks | None, flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any (so all stop at the same batch)."""
    if ranks is None:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    with _collective(ranks):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def learning_step(
    ranks: Ranks,
    net: Network,
    x: Tensor,
    y: Tensor,
    cfg: LearningConfig,
    generator: torch.Generator | None,
) -> StepStats:
    """`darnn.learning.learning_step` on a global batch, this rank relaxing its slice."""
    batch, world = x.shape[0], ranks.world
    share = math.ceil(batch / world)
    # Equal slices for all_gather: the last rank(s) pad with copies of the last sample,
    # relaxed and then dropped.
    rows = torch.arange(ranks.rank * share, (ranks.rank + 1) * share, device=x.device)
    rows = rows.clamp_(max=batch - 1)
    if net.config.readout == "neurons":  # update masks drawn for the whole batch, as one process
        mine = protocol.relax_training(
            net, x[rows], y[rows], cfg, generator, rows=rows, global_batch=batch
        )
        return protocol_stats(net, x, y, _gathered_protocol(ranks, mine, batch), cfg)
    if cfg.rule != "dynamical":  # both phases' states and free fields, gathered
        from . import contrastive

        mine = contrastive.relax_phases(net, x[rows], y[rows], cfg, generator)
        parts = _gather_rows(ranks, mine.parts(), batch)
        return contrastive.learn(
            net, x, y, contrastive.Phases.from_parts(parts, len(net.sizes)), cfg
        )
    drives, free = two_phase(net, x[rows], y[rows], cfg, generator)
    readout_in = label_free_state(net, drives, cfg, generator)
    extra = [] if readout_in is None else [readout_in]
    n = len(net.sizes)
    counts = [free.converged.to(x.dtype).unsqueeze(1), free.sweeps.to(x.dtype).unsqueeze(1)]
    pieces = _gather_rows(ranks, [*free.states, *free.fields, *extra, *counts], batch)
    states, fields = pieces[:n], pieces[n : 2 * n]
    gathered_readout_in = pieces[2 * n] if extra else None
    converged, sweeps = pieces[-2].squeeze(1), pieces[-1].squeeze(1)
    return learn_relaxed(net, x, y, states, fields, converged, sweeps, cfg, gathered_readout_in)


def _gather_rows(ranks: Ranks, parts: list[Tensor], batch: int) -> list[Tensor]:
    """Every rank's (share, n_i) blocks, gathered into (batch, n_i) blocks (padding dropped)."""
    packed = torch.cat(parts, dim=1).contiguous()
    blocks = [torch.empty_like(packed) for _ in range(ranks.world)]
    with _collective(ranks):
        dist.all_gather(blocks, packed)
    full = torch.cat(blocks)[:batch]
    return list(full.split([p.shape[1] for p in parts], dim=1))


def _gathered_protocol(
    ranks: Ranks, mine: protocol.ProtocolRelaxation, batch: int
) -> protocol.ProtocolRelaxation:
    """Every rank's rows of the authors' relaxation, gathered: the whole batch's."""
    states = [mine.final] + ([mine.first] if mine.first is not None else [])
    parts = [t for st in states for t in (*st.modules, st.readout)]
    parts.append(mine.stable.to(mine.final.readout.dtype).unsqueeze(1))
    gathered = _gather_rows(ranks, parts, batch)
    n = len(mine.final.modules) + 1
    final = protocol.State(gathered[: n - 1], gathered[n - 1])
    first = (
        protocol.State(gathered[n : 2 * n - 1], gathered[2 * n - 1]) if len(states) > 1 else None
    )
    stable = gathered[-1].squeeze(1).bool()
    return protocol.ProtocolRelaxation(final, first, mine.sweeps, stable)


def evaluate_sharded(
    ranks: Ranks | None,
    net: Network,
    X: Tensor,
    y: Tensor,
    cfg: LearningConfig,
    batch_size: int,
) -> dict[str, float]:
    """Accuracy and dynamics statistics of (X, y), each rank evaluating a contiguous slice."""
    if ranks is None:
        result = evaluate(net, X, y, cfg, batch_size)
        return {k: float(result[k]) for k in ("accuracy", "sweeps", "converged")}  # type: ignore[arg-type]
    n = X.shape[0]
    share = math.ceil(n / ranks.world)
    lo, hi = min(ranks.rank * share, n), min((ranks.rank + 1) * share, n)
    totals = torch.zeros(4, dtype=torch.float64)
    if hi > lo:
        part = evaluate(net, X[lo:hi], y[lo:hi], cfg, batch_size)
        stats = [float(part[k]) * (hi - lo) for k in ("accuracy", "sweeps", "converged")]  # type: ignore[arg-type]
        totals += torch.tensor([*stats, hi - lo], dtype=torch.float64)
    with _collective(ranks):
        dist.all_reduce(totals)
    count = max(float(totals[3]), 1.0)
    return {
        "accuracy": round(float(totals[0])) / count,
        "sweeps": float(totals[1]) / count,
        "converged": round(float(totals[2])) / count,
    }
