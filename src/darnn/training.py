"""The training run behind ``darnn train``: data, network, epochs, evaluation, checkpoints.

`train` reads top to bottom: claim the run directory, load the data, build the network
(or restore it from the checkpoint), then per epoch `fit_epoch` over a seeded random order,
evaluation on validation and test, diagnostics, a checkpoint. Ctrl-C or SIGTERM stops at
the next batch boundary and saves the exact position, so ``--resume`` ends with the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed, rundir
from .config import shown, to_dict
from .data import DataError, Dataset, load_dataset
from .diagnostics import coupling_symmetry, field_components, field_summary
from .epoch import EpochCounters, fit_epoch, seeded_generators, threads_for
from .learning import learning_step
from .network import Network
from .plots import plot_field_histograms, plot_learning_curves
from .runconfig import (
    RESUMABLE_KEYS,
    ConfigError,
    DataConfig,
    RunConfig,
    changed_keys,
    config_digest,
)
from .runs import (
    DTYPES,
    RunError,
    check_tensors,
    load_checkpoint,
    save_checkpoint,
    save_model,
)
from .runs import write_jsonl as write_metrics
from .threads import using_threads

METRICS_FILE, CHECKPOINT_FILE, MODEL_STEM = "metrics.jsonl", "checkpoint.safetensors", "model"
CURVES_FILE, FIELDS_FILE = "learning_curves.png", "field_histograms.png"


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
    """Train ``config`` into the run directory ``out_dir``; returns a summary dict.

    resume: continue the run in ``out_dir`` from its checkpoint (``config`` may differ from
        the one it was trained with only in RESUMABLE_KEYS).
    on_batch(epoch, batches_done): called after every batch; True stops like Ctrl-C.
    on_epoch(record): called with each epoch's metrics once they are saved; True ends the
        run there (status "stopped": a sweep's pruner uses it).
    The summary's "status" is "completed", "stopped" or "interrupted" (a checkpoint then
    holds the exact position). Under torchrun every rank calls this; rank 0 alone writes.
    """
    out = Path(out_dir)
    dc, nc, lc, tc = config.data, config.network, config.learning, config.train
    device, dtype = resolve_device(tc.device), DTYPES[tc.dtype]
    ranks = distributed.start(device, tc.dist_timeout)  # None unless launched by torchrun
    main = ranks is None or ranks.main

    # Everything a user can get wrong about the directory is checked before the data load
    # (by rank 0, which alone writes; the others receive its checkpoint or its error).
    def prepare() -> tuple[Any, bool | None]:
        if resume:
            checkpoint = read_resume_point(out, config)
            rundir.record_resume(out, command)
            return checkpoint, None
        created = rundir.claim(out)
        try:
            rundir.write_run_info(out, config.to_dict(), seed=tc.seed, command=command)
        except BaseException:
            rundir.discard(out, created)
            raise
        return None, created

    created, stop = None, StopSignals()
    try:
        if ranks is not None:
            device = check_distributed(ranks, config, device)
        checkpoint, created = distributed.from_main(ranks, prepare)
        data = load_data(dc)
        fingerprint = data_fingerprint(data)
        X = torch.from_numpy(data.X_train).to(device, dtype)
        y = torch.from_numpy(data.y_train).to(device)
        splits = {
            name: (torch.from_numpy(Xs).to(device, dtype), torch.from_numpy(ys).to(device))
            for name, Xs, ys in (
                ("val", data.X_val, data.y_val),
                ("test", data.X_test, data.y_test),
            )
        }
        probe = (X[: tc.probe_size], y[: tc.probe_size])
        n_train, n_batches = X.shape[0], math.ceil(X.shape[0] / tc.batch_size)
        every = tc.checkpoint_every if isinstance(tc.checkpoint_every, int) else 0

        try:
            net = Network(
                nc, data.n_features, data.n_classes, seed=tc.seed, device=device, dtype=dtype
            )
        except ValueError as exc:  # too large for memory, checked before allocating
            raise ConfigError(f"config section 'network': {exc}") from None
        order_gen, dynamics_gen = seeded_generators(tc.seed)
        start_epoch, batch, perm, counters = 0, 0, None, EpochCounters()
        metrics: list[dict[str, Any]] = []
        wall_offset = 0.0
        if checkpoint is not None:  # restore exactly what the interrupted run held
            state, tensors = checkpoint
            check_resume_state(state, tensors, out, fingerprint, n_train, n_batches)
            weights = {
                k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")
            }
            check_tensors(net, weights, out / CHECKPOINT_FILE)
            net.load_state_dict(weights)
            order_gen.set_state(tensors["rng.order"])
            dynamics_gen.set_state(tensors["rng.dynamics"])
            perm = tensors.get("position.permutation")
            start_epoch, batch = state["epoch"], state["batch"]
            counters = EpochCounters(**state["counters"])
            metrics, wall_offset = state["metrics"], state["wall_time"]

        def save_position(epoch: int, batch: int, wall_time: float) -> None:
            """Checkpoint: weights, random streams, position in the epoch, metrics so far."""
            if not main:
                return
            tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
            tensors["rng.order"] = order_gen.get_state()
            tensors["rng.dynamics"] = dynamics_gen.get_state()
            if perm is not None and batch > 0:
                tensors["position.permutation"] = perm
            state = {
                "epoch": epoch,
                "batch": batch,
                "n_batches": n_batches,
                "n_train": n_train,
                "counters": counters.to_state(),
                "metrics": metrics,
                "wall_time": wall_time,
                "data_fingerprint": fingerprint,
                "config": config.to_dict(),
                "config_digest": config_digest(config),
            }
            save_checkpoint(out / CHECKPOINT_FILE, state, tensors)

        step = learning_step if ranks is None else partial(distributed.learning_step, ranks)
        started = time.perf_counter()
        with stop:
            for epoch in range(start_epoch, tc.epochs):
                if perm is None:
                    perm = torch.randperm(n_train, generator=order_gen)
                bar = progress_bar(
                    progress and main, epoch, tc.epochs, n_train, batch * tc.batch_size
                )

                def after_batch(
                    done: int, counters: EpochCounters, epoch: int = epoch, bar: Any = bar
                ) -> bool:
                    bar.update(min(done * tc.batch_size, n_train) - bar.n)
                    if done % 25 == 1:
                        bar.set_postfix(acc=f"{counters.fraction('correct'):.4f}", refresh=False)
                    if on_batch is not None and on_batch(epoch, done):
                        stop.requested = True
                    stop.requested = distributed.any_rank(ranks, stop.requested)
                    if stop.requested or (every and done % every == 0 and done < n_batches):
                        save_position(epoch, done, wall_offset + time.perf_counter() - started)
                    return stop.requested

                counters, batch = fit_epoch(
                    net,
                    X,
                    y,
                    lc,
                    tc.batch_size,
                    perm,
                    generator=dynamics_gen,
                    start_batch=batch,
                    counters=counters,
                    threads=tc.threads,
                    step=step,
                    after_batch=after_batch,
                )
                bar.close()
                if stop.requested:
                    return interrupted(out, epoch, batch, n_batches)

                # End of epoch: evaluate (test is reported, never used to choose anything).
                with using_threads(threads_for(net, tc.eval_batch_size, tc.threads)):
                    results = {
                        name: distributed.evaluate_sharded(
                            ranks, net, Xs, ys, lc, tc.eval_batch_size
                        )
                        for name, (Xs, ys) in splits.items()
                        if len(Xs)
                    }
                    parts, probe_states = field_components(net, *probe, lc)
                dynamics = results.get("val", results["test"])
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "train_acc": counters.fraction("correct"),
                    "val_acc": results["val"]["accuracy"] if "val" in results else None,
                    "test_acc": results["test"]["accuracy"],
                    "unstable": counters.fraction("unstable"),
                    "converged": counters.fraction("converged"),
                    "free_sweeps": counters.fraction("sweeps"),
                    "eval_sweeps": dynamics["sweeps"],
                    "eval_converged": dynamics["converged"],
                    "symmetry": [coupling_symmetry(J.to_dense()) for J in net.recurrent.J],
                    "fields": field_summary(parts, probe_states),
                    "train_time": counters.train_time,
                    "samples_per_s": counters.seen / max(counters.train_time, 1e-9),
                    "wall_time": wall_offset + time.perf_counter() - started,
                }
                metrics.append(record)
                perm, batch, counters = None, 0, EpochCounters()
                save_position(epoch + 1, 0, record["wall_time"])
                if main:
                    write_metrics(out / METRICS_FILE, metrics)
                    if progress:
                        log_epoch(record, tc.epochs)
                if distributed.any_rank(ranks, stop.requested):
                    return interrupted(out, epoch + 1, 0, n_batches)
                wants_stop = on_epoch is not None and bool(on_epoch(record))
                if distributed.any_rank(ranks, wants_stop) and epoch + 1 < tc.epochs:
                    return summarize(out, metrics, status="stopped")

        if main:
            save_model(
                net,
                out / MODEL_STEM,
                seed=tc.seed,
                extra={"learning": to_dict(lc), "data": to_dict(dc)},
            )
            plot_learning_curves(out / CURVES_FILE, metrics)
            plot_field_histograms(out / FIELDS_FILE, field_components(net, *probe, lc)[0])
    except BaseException:
        # A new run that fails before its first checkpoint leaves nothing behind.
        if main and created is not None and not (out / CHECKPOINT_FILE).exists():
            rundir.discard(out, created)
        raise
    finally:
        distributed.stop(ranks, orderly=not stop.requested)
    return summarize(out, metrics, status="completed")


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


# ---------------------------------------------------------------- data and devices


def load_data(
    config: DataConfig, *, name: str | None = None, data_dir: str | None = None
) -> Dataset:
    """The data set a DataConfig describes (``name``/``data_dir`` replace the config's)."""
    try:
        return load_dataset(
            name or config.name,
            data_dir=data_dir or config.data_dir,
            val_size=config.val_size,
            seed=config.split_seed,
            transform=config.transform,
            transform_dim=config.transform_dim,
            transform_seed=config.transform_seed,
            limit_train=config.limit_train,
            download=config.download,
        )
    except DataError:
        raise  # already a complete user-facing message
    except (TypeError, ValueError) as exc:  # an argument the data section passed on
        raise ConfigError(f"config section 'data': {exc}") from None


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={name!r} but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use --device cpu"
        )
    return torch.device(name)


def data_fingerprint(data: Dataset) -> str:
    """Identifies the training data, so a resumed run cannot silently train on other data."""
    digest = hashlib.sha256(np.ascontiguousarray(data.X_train).tobytes())
    digest.update(np.ascontiguousarray(data.y_train).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- stopping on a signal


class StopSignals:
    """SIGINT (Ctrl-C) or SIGTERM (what SLURM and `kill` send) ask the loop to stop at the
    next batch boundary, where it saves a checkpoint. A second Ctrl-C aborts at once; a
    repeated SIGTERM does not (torchrun may deliver it twice; a scheduler's SIGKILL follows
    its grace period anyway)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # only there can it be set
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


# ---------------------------------------------------------------- progress output


def progress_bar(enabled: bool, epoch: int, epochs: int, total: int, initial: int) -> Any:
    """A live bar on a terminal; none in a log file (CI, nohup, SLURM), where `log_epoch`'s
    one line per epoch is the progress output."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=min(initial, total),
        desc=f"epoch {epoch + 1}/{epochs}",
        unit="sample",
        unit_scale=True,
        file=sys.stderr,
        disable=not (enabled and sys.stderr.isatty()),
        dynamic_ncols=True,
        leave=False,
    )


def log_epoch(record: dict[str, Any], epochs: int) -> None:
    from tqdm.auto import tqdm

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    tqdm.write(
        f"epoch {record['epoch']}/{epochs}: train {fmt(record['train_acc'])} "
        f"val {fmt(record['val_acc'])} test {fmt(record['test_acc'])} | unstable "
        f"{record['unstable']:.3f} converged {record['converged']:.3f} | "
        f"{record['samples_per_s']:.0f} samples/s, {record['wall_time']:.0f} s",
        file=sys.stderr,
    )


# ---------------------------------------------------------------- summaries


def interrupted(out: Path, epoch: int, batch: int, n_batches: int) -> dict[str, Any]:
    position = {"epoch": epoch, "batch": batch, "n_batches": n_batches}
    return {"status": "interrupted", "run_dir": str(out), "position": position}


def summarize(out: Path, metrics: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """Final numbers of a run; the best epoch is chosen on validation, never on test."""
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
    }


# ---------------------------------------------------------------- resuming


def read_resume_point(
    out: Path, config: RunConfig
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The verified checkpoint of run ``out`` after checking ``config`` may continue it;
    None for a run killed before its first checkpoint (it then starts over, identically)."""
    if not (out / rundir.CONFIG_FILE).is_file():
        raise RunError(
            f"{out} is not a resumable run directory: it has no {rundir.CONFIG_FILE}. Start a "
            "new run instead (darnn train --out NEW_DIR)."
        )
    rundir.remove_stray_temporaries(out)
    if not (out / CHECKPOINT_FILE).is_file():
        if (out / METRICS_FILE).exists() or (out / f"{MODEL_STEM}.safetensors").exists():
            raise RunError(
                f"{out} has results but no {CHECKPOINT_FILE}, so it cannot be resumed exactly; "
                f"start a new run (darnn train --out NEW_DIR) or restore the checkpoint."
            )
        return None
    state, tensors = load_checkpoint(out / CHECKPOINT_FILE)
    stored = state.get("config")
    if not isinstance(stored, dict):
        raise RunError(
            f"The checkpoint of {out} does not record the config it was trained with (written "
            "by an older darnn); start a new run."
        )
    changed = [key for key in changed_keys(stored, config) if key not in RESUMABLE_KEYS]
    if changed:
        now = config.to_dict()
        detail = "; ".join(
            f"{k}: {shown(stored.get(k.split('.')[0], {}).get(k.split('.')[1]))} -> "
            f"{shown(now[k.split('.')[0]][k.split('.')[1]])}"
            for k in changed[:8]
        )
        raise ConfigError(
            f"cannot resume {out} with a different config ({detail}): {rundir.CONFIG_FILE} was "
            f"edited or overridden since the checkpoint. Only {', '.join(RESUMABLE_KEYS)} may "
            "change; undo the change or start a new run."
        )
    epoch, batch = state.get("epoch"), state.get("batch")
    if (
        isinstance(epoch, int)
        and isinstance(batch, int)
        and (epoch > config.train.epochs or (epoch == config.train.epochs and batch > 0))
    ):
        raise ConfigError(
            f"the checkpoint of {out} is already at epoch {epoch}, past "
            f"train.epochs={config.train.epochs}; resume with a larger train.epochs=N"
        )
    return state, tensors


def check_resume_state(
    state: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    out: Path,
    fingerprint: str,
    n_train: int,
    n_batches: int,
) -> None:
    """Every field a resumption reads, checked before it is used (a RunError names it)."""
    where = out / CHECKPOINT_FILE

    def bad(what: str) -> RunError:
        return RunError(f"Checkpoint {where} is invalid ({what}); start a new run.")

    if state.get("data_fingerprint") != fingerprint:
        raise RunError(
            f"The training data differ from those {out} was trained on (same config, other "
            "files?); the run cannot be resumed exactly."
        )
    epoch, batch = state.get("epoch"), state.get("batch")
    if not (isinstance(epoch, int) and epoch >= 0):
        raise bad(f"epoch={shown(epoch)}")
    # batch == n_batches: stopped after the epoch's last batch, before its evaluation.
    if not (isinstance(batch, int) and 0 <= batch <= n_batches) or state.get("n_batches") != (
        n_batches
    ):
        raise bad(f"batch={shown(batch)} of n_batches={shown(state.get('n_batches'))}")
    counters = state.get("counters")
    names = set(EpochCounters.__dataclass_fields__)
    if not (
        isinstance(counters, dict)
        and set(counters) == names
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in counters.values())
    ):
        raise bad("counters")
    counters["seen"] = int(counters["seen"])
    metrics = state.get("metrics")
    if not (isinstance(metrics, list) and all(isinstance(m, dict) for m in metrics)):
        raise bad("metrics")
    if not isinstance(state.get("wall_time"), (int, float)):
        raise bad("wall_time")
    reference = torch.Generator().get_state()
    for name in ("rng.order", "rng.dynamics"):
        t = tensors.get(name)
        if t is None or t.dtype != reference.dtype or t.shape != reference.shape:
            raise bad(f"generator state {name}")
    perm = tensors.get("position.permutation")
    if batch > 0 and (
        perm is None
        or perm.dtype != torch.int64
        or perm.shape != (n_train,)
        or not torch.equal(perm.sort().values, torch.arange(n_train))
    ):
        raise bad(f"the saved sample order is not a permutation of {n_train} samples")
