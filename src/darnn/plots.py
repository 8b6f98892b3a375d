"""PNG figures of a run: the shared figure helper and the training plots.

matplotlib is imported inside the functions, so importing this module (or anything that
imports it) costs nothing when no figure is drawn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import atomic_write

if TYPE_CHECKING:
    from torch import Tensor


@contextlib.contextmanager
def figure(path: Path, rows: int, cols: int, size: tuple[float, float]) -> Iterator[Any]:
    """A matplotlib (Agg) figure of rows x cols axes (always a 2-D array).

    Saved atomically to ``path`` as PNG when the block ends without error, and closed in
    any case.
    """
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


def plot_learning_curves(path: Path, metrics: list[dict[str, Any]]) -> None:
    """Accuracies (left) and dynamics diagnostics (right) against the epoch."""
    epochs = [m["epoch"] for m in metrics]
    with figure(path, 1, 2, (11, 4)) as axes:
        acc, dyn = axes[0]
        for key, label in (
            ("train_acc", "train (free phase, running)"),
            ("val_acc", "validation"),
            ("test_acc", "test"),
        ):
            acc.plot(epochs, [m[key] for m in metrics], marker="o", label=label)
        acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
        acc.legend()
        for key, label in (
            ("unstable", "unstable hidden units"),
            ("converged", "free phase at a fixed point"),
            ("eval_converged", "evaluation at a fixed point"),
        ):
            dyn.plot(epochs, [m[key] for m in metrics], marker="o", label=label)
        n_layers = len(metrics[0]["symmetry"]) if metrics else 0
        for l in range(n_layers):
            dyn.plot(
                epochs,
                [m["symmetry"][l] for m in metrics],
                marker="s",
                linestyle="--",
                label=f"symmetry of J_{l + 1}",
            )
        dyn.set(xlabel="epoch", ylabel="fraction / symmetry", title="Dynamics")
        dyn.legend(fontsize="small")


def plot_field_histograms(path: Path, components: list[dict[str, Tensor]]) -> None:
    """Per hidden module, histograms of each field component on the probe batch."""
    with figure(path, len(components), 1, (7, 3 * len(components))) as axes:
        for l, parts in enumerate(components):
            ax = axes[l][0]
            for name, values in parts.items():
                ax.hist(
                    values.flatten().double().cpu().numpy(),
                    bins=80,
                    alpha=0.5,
                    density=True,
                    label=name,
                )
            ax.set(
                xlabel="field",
                ylabel="density",
                title=f"Hidden module {l + 1}: field components after the free phase",
            )
            ax.legend()
