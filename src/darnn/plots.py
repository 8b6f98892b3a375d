"""PNG figures of a run: the shared figure helper and the training plots.

matplotlib is imported inside the functions, so importing this module (or anything that
imports it) costs nothing when no figure is drawn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .runs import atomic_write


@contextlib.contextmanager
def figure(path: Path, rows: int, cols: int, size: tuple[float, float]) -> Iterator[Any]:
    """A matplotlib (Agg) figure of rows x cols axes (always a 2-D array), saved atomically
    to ``path`` as PNG when the block ends without error, and closed in any case."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    try:
        yield axes
        fig.tight_layout()
        atomic_write(path, lambda stream: fig.savefig(stream, format="png", dpi=110))
    finally:
        plt.close(fig)
