"""Where a training run stands, saved in its checkpoint and restored exactly by ``--resume``.

A `Position` is everything besides the weights that decides what the run does next: the
two random streams, the epoch and batch, the epoch's sample order, its running counters, the
metrics so far and the wall time spent. `save_position` writes it with the weights into
``checkpoint.safetensors``; `open_run` checks a directory before any data is loaded, and
`restore_position` checks every field of a checkpoint before the run continues from it, so
an interrupted and resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import rundir
from .checks import short_repr
from .epoch import EpochCounters, seeded_generators
from .errors import ConfigError, RunError
from .modelfiles import check_tensors, load_checkpoint, save_checkpoint
from .network import Network
from .runconfig import RESUMABLE_KEYS, RunConfig, changed_keys, config_digest
from .rundir import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, MODEL_STEM

Checkpoint = tuple[dict[str, Any], dict[str, torch.Tensor]]  # JSON state, tensors


@dataclass
class Position:
    """A run's position: random streams, epoch, batch within it, and what the epoch holds."""

    order: torch.Generator  # draws each epoch's sample order
    dynamics: torch.Generator  # the asynchronous schedule's unit orders
    epoch: int = 0
    batch: int = 0  # batches of ``epoch`` already done
    permutation: torch.Tensor | None = None  # the epoch's sample order, once drawn
    counters: EpochCounters = field(default_factory=EpochCounters)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch done
    wall_time: float = 0.0  # seconds spent before this process took over

    @classmethod
    def start(cls, seed: int) -> Position:
        """The position at the start of a run with training seed ``seed``."""
        return cls(*seeded_generators(seed))

    def next_epoch(self, record: dict[str, Any]) -> None:
        """Close the epoch with its metrics ``record``."""
        self.metrics.append(record)
        self.epoch, self.batch, self.permutation = self.epoch + 1, 0, None
        self.counters = EpochCounters()


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must match to be continued: the config, the data and their sizes."""

    config: RunConfig
    data_fingerprint: str
    n_train: int
    n_batches: int


def open_run(
    out: Path, config: RunConfig, *, resume: bool, command: Sequence[str] | None
) -> tuple[Checkpoint | None, bool | None]:
    """Claim ``out`` for a new run, or check it may be resumed with ``config``.

    Returns (the checkpoint to continue from or None, whether this call created ``out``;
    None when resuming). Runs before the data load, so a mistake costs nothing.
    """
    if resume:  # recorded in meta.json only once everything is checked (record_resumption)
        return read_resume_point(out, config), None
    created = rundir.claim(out)
    try:
        rundir.write_run_info(out, config.to_dict(), seed=config.train.seed, command=command)
    except BaseException:
        rundir.discard(out, created)
        raise
    return None, created


def save_position(path: Path, net: Network, position: Position, run: RunIdentity) -> None:
    """Checkpoint: weights, random streams, position in the epoch, metrics so far."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    tensors["rng.order"] = position.order.get_state()
    tensors["rng.dynamics"] = position.dynamics.get_state()
    if position.permutation is not None and position.batch > 0:
        tensors["position.permutation"] = position.permutation
    state = {
        "epoch": position.epoch,
        "batch": position.batch,
        "n_batches": run.n_batches,
        "n_train": run.n_train,
        "counters": position.counters.to_state(),
        "metrics": position.metrics,
        "wall_time": position.wall_time,
        "data_fingerprint": run.data_fingerprint,
        "config": run.config.to_dict(),
        "config_digest": config_digest(run.config),
    }
    save_checkpoint(path, state, tensors)


def restore_position(
    checkpoint: Checkpoint, net: Network, position: Position, run: RunIdentity, out: Path
) -> None:
    """Load into ``net`` and ``position`` exactly what the interrupted run held."""
    state, tensors = checkpoint
    check_resume_state(state, tensors, out, run)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    check_tensors(net, weights, out / CHECKPOINT_FILE)
    net.load_state_dict(weights)
    position.order.set_state(tensors["rng.order"])
    position.dynamics.set_state(tensors["rng.dynamics"])
    position.permutation = tensors.get("position.permutation")
    position.epoch, position.batch = state["epoch"], state["batch"]
    position.counters = EpochCounters(**state["counters"])
    position.metrics, position.wall_time = state["metrics"], state["wall_time"]


def read_resume_point(out: Path, config: RunConfig) -> Checkpoint | None:
    """The verified checkpoint of run ``out``, once ``config`` is checked to continue it.

    None for a run killed before its first checkpoint (it then starts over, identically).
    """
    if not (out / CONFIG_FILE).is_file():
        raise RunError(
            f"{out} is not a resumable run directory: it has no {CONFIG_FILE}. Start a "
            "new run instead (darnn train --out NEW_DIR)."
        )
    check_writable(out)
    rundir.remove_stray_temporaries(out)
    if not (out / CHECKPOINT_FILE).is_file():
        if (out / METRICS_FILE).exists() or (out / f"{MODEL_STEM}.safetensors").exists():
            raise RunError(
                f"{out} has results but no {CHECKPOINT_FILE}, so it cannot be resumed exactly; "
                f"start a new run (darnn train --out NEW_DIR) or restore the checkpoint."
            )
        return None
    state, tensors = load_checkpoint(out / CHECKPOINT_FILE)
    check_same_config(out, state.get("config"), config)
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


def check_writable(out: Path) -> None:
    """RunError unless a file can be created in ``out`` (a resumed run writes checkpoints)."""
    probe = out / f".write-check.{os.getpid()}.tmp"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise RunError(
            f"{out} cannot be resumed: darnn cannot write there ({exc.strerror or exc}). "
            "Make the directory writable, or copy it somewhere writable and resume the copy."
        ) from None


def record_resumption(out: Path, command: Sequence[str] | None) -> None:
    """Append this resumption to meta.json.

    Called once the checkpoint, the data and the network have all been checked, so a
    refused --resume leaves the directory as it was.
    """
    rundir.record_resume(out, command)


def check_same_config(out: Path, stored: object, config: RunConfig) -> None:
    """``config`` differs from the checkpoint's ``stored`` one only in RESUMABLE_KEYS."""
    if not isinstance(stored, dict):
        raise RunError(
            f"The checkpoint of {out} does not record the config it was trained with (written "
            "by an older darnn); start a new run."
        )
    changed = [key for key in changed_keys(stored, config) if key not in RESUMABLE_KEYS]
    if changed:
        now = config.to_dict()
        detail = "; ".join(
            f"{k}: {short_repr(stored.get(k.split('.')[0], {}).get(k.split('.')[1]))} -> "
            f"{short_repr(now[k.split('.')[0]][k.split('.')[1]])}"
            for k in changed[:8]
        )
        raise ConfigError(
            f"cannot resume {out} with a different config ({detail}): {CONFIG_FILE} was "
            f"edited or overridden since the checkpoint. Only {', '.join(RESUMABLE_KEYS)} may "
            "change; undo the change or start a new run."
        )


def check_resume_state(
    state: dict[str, Any], tensors: dict[str, torch.Tensor], out: Path, run: RunIdentity
) -> None:
    """Every field a resumption reads, checked before it is used (a RunError names it)."""
    where = out / CHECKPOINT_FILE

    def bad(what: str) -> RunError:
        return RunError(f"Checkpoint {where} is invalid ({what}); start a new run.")

    if state.get("data_fingerprint") != run.data_fingerprint:
        raise RunError(
            f"The training data differ from those {out} was trained on (same config, other "
            "files?); the run cannot be resumed exactly."
        )
    epoch, batch = state.get("epoch"), state.get("batch")
    if not (isinstance(epoch, int) and epoch >= 0):
        raise bad(f"epoch={short_repr(epoch)}")
    # batch == n_batches: stopped after the epoch's last batch, before its evaluation.
    if not (isinstance(batch, int) and 0 <= batch <= run.n_batches) or state.get("n_batches") != (
        run.n_batches
    ):
        raise bad(f"batch={short_repr(batch)} of n_batches={short_repr(state.get('n_batches'))}")
    if not counters_ok(state.get("counters")):
        raise bad("counters")
    state["counters"]["seen"] = int(state["counters"]["seen"])
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
        try:  # torch refuses some states (e.g. all zeros: "Invalid mt19937 state")
            torch.Generator().set_state(t)
        except RuntimeError:
            raise bad(f"generator state {name}") from None
    if batch > 0 and not is_permutation(tensors.get("position.permutation"), run.n_train):
        raise bad(f"the saved sample order is not a permutation of {run.n_train} samples")


def counters_ok(counters: object) -> bool:
    """Whether a checkpoint's counters are a dict of every `EpochCounters` field, finite."""
    return (
        isinstance(counters, dict)
        and set(counters) == set(EpochCounters.__dataclass_fields__)
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in counters.values())
    )


def is_permutation(perm: torch.Tensor | None, n: int) -> bool:
    """Whether ``perm`` is an int64 permutation of 0..n-1."""
    return (
        perm is not None
        and perm.dtype == torch.int64
        and perm.shape == (n,)
        and torch.equal(perm.sort().values, torch.arange(n))
    )
