"""The training run behind ``darnn train``: data, network, epochs, evaluation, checkpoints.

`train` reads top to bottom: claim the run directory, load the data, build the network
(restoring its position from the checkpoint when resuming), then per epoch `fit_epoch` over
a seeded random order, the epoch's record (`epoch_record`: evaluation on validation and test,
diagnostics), a checkpoint. Ctrl-C or SIGTERM stops at the next batch boundary and saves the
exact position (darnn.resume), so ``--resume`` ends with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from . import distributed, rundir
from .config import to_dict
from .data import load_data
from .devices import DTYPES, resolve_device
from .diagnostics import coupling_symmetry, field_components, field_summary
from .epoch import EpochCounters, fit_epoch, threads_for
from .errors import ConfigError, RunError
from .files import write_jsonl
from .learning import dynamics_kernels, learning_step
from .modelfiles import save_model
from .network import Network
from .plots import plot_field_histograms, plot_learning_curves
from .progress import log_epoch, progress_bar
from .resume import (
    Checkpoint,
    Position,
    RunIdentity,
    open_run,
    record_resumption,
    restore_position,
    save_position,
)
from .runconfig import RunConfig
from .rundir import CHECKPOINT_FILE, CURVES_FILE, FIELDS_FILE, METRICS_FILE, MODEL_STEM
from .signals import DeferredSignals, StopSignals
from .threads import using_threads
from .tracking import Board, require_extras

Batch = tuple[torch.Tensor, torch.Tensor]  # features, labels


def train(
    config: RunConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    command: Sequence[str] | None = None,
    on_batch: Callable[[int, int], bool | None] | None = None,
    on_epoch: Callable[[dict[str, Any]], bool | None] | None = None,
) -> dict[str, Any]:
    """Train ``config`` into the run directory ``out_dir`` (what ``darnn train`` runs).

    Args:
        config: The run config (data, network, learning, train sections).
        out_dir: A new or empty folder; with ``resume``, the run to continue.
        resume: Continue from the checkpoint (``config`` may differ only in RESUMABLE_KEYS).
        progress: Show a progress bar and one line per epoch.
        command: The command line recorded in meta.json.
        on_batch: ``on_batch(epoch, batches_done)`` after every batch; True stops like Ctrl-C.
        on_epoch: ``on_epoch(record)`` once each epoch's metrics are saved; True ends the run
            there (status "stopped": a sweep's pruner uses it).

    Returns:
        The summary: "status" ("completed", "stopped" or "interrupted", a checkpoint then
        holding the exact position), the final and best accuracies, and "metrics" (the
        per-epoch records of metrics.jsonl). Under torchrun every rank calls this; rank 0
        alone writes. Errors meant for the user are `RunError` / `ConfigError`.
    """
    out, train_cfg = Path(out_dir), config.train
    device, dtype = resolve_device(train_cfg.device), DTYPES[train_cfg.dtype]
    ranks = distributed.start(device, train_cfg.dist_timeout)  # None unless launched by torchrun
    main = ranks is None or ranks.main
    created, stop = None, StopSignals()
    try:
        require_extras(config)  # before anything is written: names a missing extra
        if ranks is not None:
            device = check_distributed(ranks, config, device)
        # The directory is checked before the data load, by rank 0 (the others receive its
        # checkpoint or its error).
        opened = partial(open_run, out, config, resume=resume, command=command)
        checkpoint, created = distributed.from_main(ranks, opened)
        run, splits = prepare_run(out, config, device, dtype, ranks, checkpoint)
        start_recording(run, resume, command)
        with stop:
            while run.position.epoch < train_cfg.epochs:
                bar = run.progress_bar(progress)
                run.fit_epoch(partial(run.after_batch, bar, stop, on_batch))
                bar.close()
                if stop.requested:
                    return run.summary("interrupted")
                record = epoch_record(run, splits, run.position.counters)
                run.end_epoch(record, log=progress)
                if distributed.any_rank(ranks, stop.requested):
                    return run.summary("interrupted")
                wants_stop = on_epoch is not None and bool(on_epoch(record))
                if (
                    distributed.any_rank(ranks, wants_stop)
                    and run.position.epoch < train_cfg.epochs
                ):
                    return run.summary("stopped")
        if main:
            with DeferredSignals() as late:  # the results are written whatever arrives
                save_results(run)
            if late.received:
                print(
                    "darnn: a stop signal arrived while the finished run's results were "
                    "being written; they were written first",
                    file=sys.stderr,
                )
    except BaseException:
        # A new run that fails before its first checkpoint leaves nothing behind.
        if main and created is not None and not (out / CHECKPOINT_FILE).exists():
            rundir.discard(out, created)
        raise
    finally:
        distributed.stop(ranks, orderly=not stop.requested)
    return run.summary("completed")


def start_recording(run: Run, resume: bool, command: Sequence[str] | None) -> None:
    """Once the checkpoint, data and network are checked (rank 0), record and open.

    The resumption goes into meta.json, and the TensorBoard writer opens (catching up epochs
    not yet logged).
    """
    if run.main and resume:
        record_resumption(run.out, command)
    if run.main and run.config.train.tensorboard:
        run.board = Board(run.out, run.position.metrics)


def prepare_run(
    out: Path,
    config: RunConfig,
    device: torch.device,
    dtype: torch.dtype,
    ranks: distributed.Ranks | None,
    checkpoint: Checkpoint | None,
) -> tuple[Run, dict[str, Batch]]:
    """The run at its start, or where its checkpoint stopped, and the evaluation splits."""
    train_cfg = config.train
    data = load_data(config.data)
    train_set = tensors(data.X_train, data.y_train, device, dtype)
    splits = {
        "val": tensors(data.X_val, data.y_val, device, dtype),
        "test": tensors(data.X_test, data.y_test, device, dtype),
    }
    n_train = len(train_set[1])
    net = build_network(config, data.n_features, data.n_classes, device, dtype)
    identity = RunIdentity(config, data.fingerprint(), n_train, -(-n_train // train_cfg.batch_size))
    run = Run(out, config, net, Position.start(train_cfg.seed), identity, train_set, ranks)
    if checkpoint is not None:
        restore_position(checkpoint, net, run.position, identity, out)
    return run, splits


@dataclass
class Run:
    """What a training run holds between batches: its network, data, position, directory."""

    out: Path
    config: RunConfig
    net: Network
    position: Position
    identity: RunIdentity
    train_set: Batch
    ranks: distributed.Ranks | None
    board: Board | None = None  # TensorBoard events (train.tensorboard), rank 0

    def __post_init__(self) -> None:
        self.started = time.perf_counter()
        size = self.config.train.probe_size
        # fixed training samples on which field statistics are measured
        self.probe = (self.train_set[0][:size], self.train_set[1][:size])
        self.step = (
            learning_step if self.ranks is None else partial(distributed.learning_step, self.ranks)
        )

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (rank 0, or the only process)."""
        return self.ranks is None or self.ranks.main

    def wall_time(self) -> float:
        """Seconds of training so far, this process's and those before a resumption."""
        return self.position.wall_time + time.perf_counter() - self.started

    def progress_bar(self, enabled: bool) -> Any:
        """The current epoch's live bar (rank 0, on a terminal)."""
        pos, train_cfg, n_train = self.position, self.config.train, self.identity.n_train
        done = pos.batch * train_cfg.batch_size
        return progress_bar(enabled and self.main, pos.epoch, train_cfg.epochs, n_train, done)

    def fit_epoch(self, after_batch: Callable[[int, EpochCounters], bool]) -> None:
        """The rest of the current epoch, from the batch the position stands at."""
        pos, train_cfg = self.position, self.config.train
        if pos.permutation is None:
            pos.permutation = torch.randperm(self.identity.n_train, generator=pos.order)
        pos.counters, pos.batch = fit_epoch(
            self.net,
            *self.train_set,
            self.config.learning,
            train_cfg.batch_size,
            pos.permutation,
            generator=pos.dynamics,
            start_batch=pos.batch,
            counters=pos.counters,
            threads=train_cfg.threads,
            step=self.step,
            after_batch=after_batch,
        )

    def end_epoch(self, record: dict[str, Any], *, log: bool) -> None:
        """Close the epoch with its ``record``: checkpoint, metrics.jsonl, the log line."""
        self.position.next_epoch(record)
        self.save(record["wall_time"])
        if self.main:
            write_jsonl(self.out / METRICS_FILE, self.position.metrics)
            if log:
                log_epoch(record, self.config.train.epochs)
        if self.board is not None:  # the scalars of record, histograms of the probe's fields
            fields = field_components(self.net, *self.probe, self.config.learning)[0]
            self.board.log_epoch(record, fields)

    def save(self, wall_time: float | None = None) -> None:
        """Checkpoint the current position (``position.wall_time`` is what was spent before)."""
        if self.main:
            spent = self.wall_time() if wall_time is None else wall_time
            position = dataclasses.replace(self.position, wall_time=spent)
            path = self.out / CHECKPOINT_FILE
            try:
                save_position(path, self.net, position, self.identity)
            except OSError as exc:  # full disk, quota, read-only: the rename never happened
                kept = (
                    f"the previous checkpoint {path} is intact (checkpoints are replaced "
                    "atomically), so `darnn train --resume` continues from it once there is room"
                    if path.is_file()
                    else "no checkpoint was written yet"
                )
                reason = exc.strerror or exc
                raise RunError(
                    f"could not write the checkpoint of {self.out} ({reason}); {kept}."
                ) from None

    def after_batch(
        self,
        bar: Any,
        stop: StopSignals,
        on_batch: Callable[[int, int], bool | None] | None,
        done: int,
        counters: EpochCounters,
    ) -> bool:
        """`fit_epoch`'s callback: progress, stop requests, checkpoints within an epoch."""
        train_cfg, pos = self.config.train, self.position
        bar.update(min(done * train_cfg.batch_size, self.identity.n_train) - bar.n)
        if done % 25 == 1:
            bar.set_postfix(acc=f"{counters.fraction('correct'):.4f}", refresh=False)
        if on_batch is not None and on_batch(pos.epoch, done):
            stop.requested = True
        stop.requested = distributed.any_rank(self.ranks, stop.requested)
        every = train_cfg.checkpoint_every if isinstance(train_cfg.checkpoint_every, int) else 0
        if stop.requested or (every and done % every == 0 and done < self.identity.n_batches):
            pos.batch = done
            self.save()
        return stop.requested

    def summary(self, status: str) -> dict[str, Any]:
        """The run's result; an interrupted one also says where it stopped."""
        if self.board is not None:
            self.board.close()
        summary = run_summary(self.out, self.position.metrics, status)
        if status == "interrupted":
            pos = self.position
            summary["position"] = {
                "epoch": pos.epoch,
                "batch": pos.batch,
                "n_batches": self.identity.n_batches,
            }
        return summary


def tensors(X: Any, y: Any, device: torch.device, dtype: torch.dtype) -> Batch:
    """A split's numpy arrays as tensors on ``device``."""
    return torch.from_numpy(X).to(device, dtype), torch.from_numpy(y).to(device)


def build_network(
    config: RunConfig, n_features: int, n_classes: int, device: torch.device, dtype: torch.dtype
) -> Network:
    """The run's network, built with its seed (its memory is checked before allocating)."""
    try:
        return Network(
            config.network,
            n_features,
            n_classes,
            seed=config.train.seed,
            device=device,
            dtype=dtype,
        )
    except ValueError as exc:  # too large for memory
        raise ConfigError(f"config section 'network': {exc}") from None


def epoch_record(run: Run, splits: dict[str, Batch], counters: EpochCounters) -> dict[str, Any]:
    """The metrics of the epoch just trained.

    Accuracies (test is reported, never used to choose anything), dynamics, coupling
    symmetry and field statistics, speed.
    """
    net, learning, train_cfg = run.net, run.config.learning, run.config.train
    with using_threads(threads_for(net, train_cfg.eval_batch_size, train_cfg.threads)):
        results = {
            name: distributed.evaluate_sharded(
                run.ranks, net, Xs, ys, learning, train_cfg.eval_batch_size
            )
            for name, (Xs, ys) in splits.items()
            if len(Xs)
        }
        parts, probe_states = field_components(net, *run.probe, learning)
    dynamics = results.get("val", results["test"])
    kernels = dynamics_kernels(net, learning, train_cfg.batch_size, train_cfg.eval_batch_size)
    return {
        "epoch": run.position.epoch + 1,
        "train_acc": counters.fraction("correct"),
        "val_acc": results["val"]["accuracy"] if "val" in results else None,
        "test_acc": results["test"]["accuracy"],
        "unstable": counters.fraction("unstable"),
        "converged": counters.fraction("converged"),
        "free_sweeps": counters.fraction("sweeps"),
        "eval_sweeps": dynamics["sweeps"],
        "eval_converged": dynamics["converged"],
        "symmetry": [coupling_symmetry(J) for J in net.recurrent.J],  # CSR: O(nnz)
        "fields": field_summary(parts, probe_states),
        "train_time": counters.train_time,
        "samples_per_s": counters.seen / max(counters.train_time, 1e-9),
        "kernel": kernels["train"],
        "eval_kernel": kernels["eval"],
        "wall_time": run.wall_time(),
    }


def save_results(run: Run) -> None:
    """The trained model and the two plots of a completed run."""
    out, config = run.out, run.config
    extra = {"learning": to_dict(config.learning), "data": to_dict(config.data)}
    save_model(run.net, out / MODEL_STEM, seed=config.train.seed, extra=extra)
    plot_learning_curves(out / CURVES_FILE, run.position.metrics)
    parts = field_components(run.net, *run.probe, config.learning)[0]
    plot_field_histograms(out / FIELDS_FILE, parts)


def check_distributed(
    ranks: distributed.Ranks, config: RunConfig, device: torch.device
) -> torch.device:
    """What a data-parallel run needs; its device (one GPU per local rank)."""
    if config.learning.schedule == "asynchronous":
        raise ConfigError(
            "learning.schedule='asynchronous' cannot run data-parallel: its random unit "
            "orders depend on how the batch is split. Use synchronous or sequential, or "
            "run one process."
        )
    if device.type == "cuda":
        return torch.device("cuda", ranks.local_rank)
    return device


def run_summary(out: Path, metrics: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """Final numbers of a run and its per-epoch ``metrics``.

    The best epoch is chosen on validation, never on test.
    """
    last = metrics[-1] if metrics else {}
    scored = [m for m in metrics if m.get("val_acc") is not None]
    best = max(scored, key=lambda m: m["val_acc"]) if scored else None
    return {
        "status": status,
        "run_dir": str(out),
        "epochs": last.get("epoch", 0),
        "train_acc": last.get("train_acc"),
        "val_acc": last.get("val_acc"),
        "test_acc": last.get("test_acc"),
        "best_val_epoch": best["epoch"] if best else None,
        "best_val_acc": best["val_acc"] if best else None,
        "wall_time": last.get("wall_time"),
        "metrics": metrics,
    }
