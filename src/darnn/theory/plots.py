"""Figures of the theory experiments, one per experiment (PNG, written atomically).

matplotlib is imported only when a figure is drawn (through `darnn.plots.figure`), so the
experiments themselves never need it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SCHEDULES
from ..plots import figure
from .access import MODELS, AccessRow
from .counting import CountRow, annealed_complexity
from .geometry import GeometryResult


def _colors(name: str, k: int, top: float = 0.9) -> list[Any]:
    """The first k colours of a matplotlib colormap (imported on use, like the figures)."""
    import matplotlib

    return list(matplotlib.colormaps[name](np.linspace(0, top, k)))


def plot_count(rows: Sequence[CountRow], path: Path) -> None:
    """Measured (1/N) ln E#FP and (1/N) E ln #FP against the annealed curve, one panel per kappa."""
    kappas = sorted({r.kappa for r in rows})
    sizes = sorted({r.n for r in rows})
    colors = _colors("viridis", len(sizes))
    with figure(path, 1, len(kappas), (4.6 * len(kappas), 3.8)) as axes:
        for ax, kappa in zip(axes[0], kappas):
            sel = [r for r in rows if r.kappa == kappa]
            grid = np.linspace(min(r.j_d for r in sel), max(r.j_d for r in sel), 200)
            ax.plot(
                grid,
                [annealed_complexity(x, kappa) for x in grid],
                "k-",
                lw=1.5,
                label=r"annealed $\ln 2+\ln\Phi(J_D-\kappa)$",
            )
            for n, col in zip(sizes, colors):
                rn = sorted((r for r in sel if r.n == n), key=lambda r: r.j_d)
                x = [r.j_d for r in rn]
                ax.plot(x, [r.annealed_n for r in rn], ":", color=col, lw=1)
                ax.plot(
                    x,
                    [r.complexity if math.isfinite(r.complexity) else np.nan for r in rn],
                    "o",
                    color=col,
                    ms=4,
                    label=f"N={n}",
                )
                ax.plot(x, [r.quenched for r in rn], "s", mfc="none", color=col, ms=5)
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_xlabel(r"$J_D$")
            ax.set_title(rf"$\kappa={kappa:g}$")
        axes[0][0].set_ylabel("complexity")
        axes[0][0].plot([], [], "ks", mfc="none", label=r"quenched $\frac{1}{N}E\ln\#$")
        axes[0][0].plot([], [], "k:", label="exact E# at N")
        axes[0][0].legend(fontsize=7, loc="lower right")
        axes[0][0].figure.suptitle(
            r"fixed points: dots $\frac{1}{N}\ln E\#$, squares $\frac{1}{N}E\ln\#$", fontsize=10
        )


def plot_access(rows: Sequence[AccessRow], path: Path, max_sweeps: int | None = None) -> None:
    """Converged fraction and median sweeps: versus J_D (one module), versus lambda (chain)."""
    models = [m for m in MODELS if any(r.model == m for r in rows)]
    with figure(path, 2, len(models), (5.2 * len(models), 6.6)) as axes:
        for col, model in enumerate(models):
            _draw_access(rows, axes, col, model, max_sweeps)


def _draw_access(
    rows: Sequence[AccessRow], axes: Any, col: int, model: str, max_sweeps: int | None
) -> None:
    sel = [r for r in rows if r.model == model]
    sizes = sorted({r.n for r in sel})
    colors = dict(zip(sizes, _colors("plasma", len(sizes), 0.85)))
    for schedule in [s for s in SCHEDULES if any(r.schedule == s for r in sel)]:
        for n in sizes:
            rn = sorted(
                (r for r in sel if r.schedule == schedule and r.n == n), key=lambda r: r.value
            )
            if rn:
                _draw_access_curve(axes[0][col], axes[1][col], rn, schedule, colors[n])
    name = r"$J_D$" if model == "single" else r"$\lambda$ (two modules, $J_D=0$)"
    axes[0][col].set_title("one module" if model == "single" else "two-module chain")
    axes[0][col].set_ylabel("fraction reaching a fixed point")
    axes[0][col].legend(fontsize=6.5, ncol=2)
    axes[1][col].set_yscale("log")
    axes[1][col].set_ylabel("median sweeps (converged runs)")
    axes[1][col].set_xlabel(name)
    if max_sweeps:
        axes[1][col].axhline(max_sweeps, color="grey", lw=0.5)


_ACCESS_STYLES = {"synchronous": "-o", "sequential": "-.^", "asynchronous": "--s"}
_SHORT = {"synchronous": "sync", "sequential": "seq", "asynchronous": "async"}


def _draw_access_curve(
    top: Any, bottom: Any, rows: list[AccessRow], schedule: str, color: Any
) -> None:
    """One schedule and size: converged fraction (top) and median sweeps (bottom)."""
    x, n, style = [r.value for r in rows], rows[0].n, _ACCESS_STYLES[schedule]
    kw = {"color": color, "ms": 3.5, "lw": 1.2}
    top.errorbar(
        x,
        [r.converged for r in rows],
        [r.stderr for r in rows],
        fmt=style,
        capsize=2,
        label=f"{_SHORT[schedule]} N={n}",
        **kw,
    )
    bottom.plot(x, [r.median_sweeps for r in rows], style, **kw)
    if rows[0].model == "chain" and schedule == "synchronous":
        # Where the fully synchronous chain fails, show how: a period-2 swap.
        top.plot(
            x,
            [r.two_cycle for r in rows],
            ":x",
            color=color,
            lw=1,
            ms=4,
            label=f"sync N={n}: on a 2-cycle",
        )


def plot_geometry(result: GeometryResult, path: Path) -> None:
    """Overlap histograms; fraction back at a fixed point within r*d; final distance / d."""
    with figure(path, 1, 3, (14, 3.9)) as axes:
        _draw_geometry(result, *axes[0])


def _legend(ax: Any, **kw: Any) -> None:
    """A legend only where something was drawn (no fixed point reached: empty panels)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _draw_geometry(result: GeometryResult, ax0: Any, ax1: Any, ax2: Any) -> None:
    j_ds = sorted(result.reached)
    colors = dict(zip(j_ds, _colors("viridis", len(j_ds), 0.85)))
    _draw_overlaps(result, ax0, colors)
    _draw_returns(result, ax1, ax2, colors)


def _draw_overlaps(result: GeometryResult, ax: Any, colors: dict[float, Any]) -> None:
    """Histograms of the overlaps between reached fixed points and with their starts."""
    bins = np.linspace(-1, 1, 81)
    for j_d, color in colors.items():
        for kind, style in (("fp-fp", "stepfilled"), ("start-fp", "step")):
            q = [r.q for r in result.overlaps if r.j_d == j_d and r.kind == kind]
            if q:
                ax.hist(
                    q,
                    bins=bins,
                    density=True,
                    histtype=style,
                    color=color,
                    alpha=0.45 if style == "stepfilled" else 1.0,
                    lw=1.2,
                    label=f"$J_D$={j_d:g} {kind}",
                )
    ax.set_xlabel("overlap q")
    ax.set_ylabel("density")
    ax.set_title("filled: two reached fixed points; line: start and its fixed point", fontsize=8.5)
    _legend(ax, fontsize=7)


def _draw_returns(result: GeometryResult, ax1: Any, ax2: Any, colors: dict[float, Any]) -> None:
    """Draw, after d flips from a fixed point, the fraction back within r*d (ax1).

    And how far the new fixed point lies, relative to d (ax2, at the smallest radius).
    """
    radii = sorted({r.radius for r in result.returns})
    styles = dict(zip(radii, ["o:", "s--", "^-", "v-.", "d-"]))

    def curve(j_d: float, radius: float) -> list[Any]:
        rows = (r for r in result.returns if r.j_d == j_d and r.radius == radius)
        return sorted(rows, key=lambda r: r.d)

    for j_d, color in colors.items():
        for radius in radii:
            if sel := curve(j_d, radius):
                ax1.plot(
                    [r.d / r.n for r in sel],
                    [r.fraction for r in sel],
                    styles.get(radius, "x-"),
                    color=color,
                    ms=3.5,
                    label=f"$J_D$={j_d:g}, r={radius:g}",
                )
        if radii and (sel := curve(j_d, radii[0])):
            ax2.plot(
                [r.d / r.n for r in sel],
                [r.mean_distance / r.d for r in sel],
                "o-",
                color=color,
                ms=3.5,
                label=f"$J_D$={j_d:g}",
            )
    ax1.set_xscale("log")
    ax1.set_xlabel("d / N (units flipped in a reached fixed point s*)")
    ax1.set_ylabel("fraction ending at a fixed point within r·d of s*")
    _legend(ax1, fontsize=6.5, ncol=2)
    ax2.axhline(1, color="grey", lw=0.6)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("d / N")
    ax2.set_ylabel("(distance of the new fixed point to s*) / d")
    ax2.set_title("1: stays where it was put; <1: pulled back; >1: runs off", fontsize=8.5)
    _legend(ax2, fontsize=7)
