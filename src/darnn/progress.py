"""Progress output of a training run: a live bar on a terminal, one line per epoch in a log."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(enabled: bool, epoch: int, epochs: int, total: int, initial: int) -> Any:
    """A live bar on a terminal; none in a log file (CI, nohup, SLURM).

    There `log_epoch`'s one line per epoch is the progress output.
    """
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
    """Print the epoch's one-line summary (accuracies, convergence, speed)."""
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
