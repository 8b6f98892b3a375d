"""TensorBoard event files of a training run (``train.tensorboard: true`` / ``--tensorboard``).

Every number of a metrics.jsonl record becomes a scalar at step = epoch, under the record's
own key (``train_acc``, ``val_acc``, ``unstable``, ``samples_per_s``; lists and mappings by
path: ``symmetry/0``, ``fields/0/internal/mean``), and the field components at the probe
samples' free-phase states become histograms (``field_histogram/0/internal``, ...). Files go
to RUN_DIR/tensorboard, written with torch's own ``torch.utils.tensorboard.SummaryWriter``
(the ``tensorboard`` package is the optional extra ``darnn[tensorboard]``).

A resumed run appends: the steps already in the folder's event files are read back first,
and only the epochs after the last one logged are written, so no step appears twice (the
epochs a crash left unlogged are written on resume from metrics.jsonl's records).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigError

FOLDER = "tensorboard"
EXTRA = "pip install 'darnn[tensorboard]' (or: pip install tensorboard)"


def require() -> None:
    """ConfigError naming the extra when TensorBoard's writer cannot be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"train.tensorboard needs the tensorboard package ({exc}); install the "
            f"tensorboard extra: {EXTRA}, or run without it (train.tensorboard=false, "
            "also allowed when resuming)"
        ) from None


def require_extras(config: Any) -> None:
    """`require` when the run config ``config`` asks for TensorBoard events."""
    if config.train.tensorboard:
        require()


def scalars(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """(tag, value) of every finite number in a metrics record, but its epoch."""
    items = record.items() if isinstance(record, dict) else enumerate(record)
    for key, value in items:
        tag = f"{prefix}{key}"
        if tag == "epoch":
            continue
        if isinstance(value, (dict, list, tuple)):
            yield from scalars(value, f"{tag}/")  # type: ignore[arg-type]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            finite = math.isfinite(value)  # None and NaN (no validation split) are skipped
            if finite:
                yield tag, float(value)


def logged_steps(folder: Path) -> int:
    """The last step of any event already in ``folder`` (0 when none)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    last = 0
    for path in sorted(folder.glob("events.out.tfevents.*")):
        try:
            for event in EventFileLoader(str(path)).Load():
                if event.HasField("summary") and event.summary.value:
                    last = max(last, int(event.step))
        except Exception:  # a truncated last record of a killed writer: keep what was read
            continue
    return last


class Board:
    """The run's TensorBoard writer; ``log_epoch`` after each epoch's record is saved."""

    def __init__(self, run_dir: Path, metrics: list[dict[str, Any]]) -> None:
        require()
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(run_dir) / FOLDER
        self.last = logged_steps(folder) if folder.is_dir() else 0
        self.writer = SummaryWriter(log_dir=str(folder))
        for record in metrics:  # epochs done but not yet logged (a crash, or tensorboard
            self.log_epoch(record)  # switched on at resume): scalars only

    def log_epoch(self, record: dict[str, Any], fields: list[dict[str, Any]] | None = None) -> None:
        """Write one epoch: ``record``'s scalars and the histograms of ``fields``.

        ``fields`` holds, per module, name -> tensor. Everything goes at step = the record's
        epoch, unless that epoch is already in the event files.
        """
        step = int(record["epoch"])
        if step <= self.last:
            return
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, step)
        for l, layer in enumerate(fields or []):
            for name, values in layer.items():
                self.writer.add_histogram(
                    f"field_histogram/{l}/{name}", values.detach().float().cpu().reshape(-1), step
                )
        self.writer.flush()
        self.last = step

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
