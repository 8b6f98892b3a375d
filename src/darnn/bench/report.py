"""The bench's report: table.md (mean ± std over seeds) and PNG plots from results.json.

Plots: test accuracy against learned parameters, validation accuracy against epochs for
every method (a chain's lambda values in a panel of their own), and, when the bench has a
chain, test accuracy against lambda.
"""

from __future__ import annotations

import math
import shlex
import statistics
from pathlib import Path
from typing import Any

from ..files import write_text
from ..plots import figure
from .methods import Plan

TABLE_FILE = "table.md"
PARAMS_PLOT, CURVES_PLOT, LAMBDA_PLOT, WIDTH_PLOT = (
    "accuracy_vs_params.png",
    "learning_curves.png",
    "lambda_recovery.png",
    "accuracy_vs_width.png",
)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def method_rows(records: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """One row per method (in ``order``) aggregating its seeds."""
    by_method = {name: [r for r in records if r["method"] == name] for name in order}
    return [method_row(name, runs) for name, runs in by_method.items() if runs]


def method_row(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean (and sample std) over seeds of one method's ``runs``."""
    test, test_std = mean_std([r["test_acc"] for r in runs])
    val, val_std = mean_std([r["val_acc"] for r in runs])
    epochs = max(len(r["val_curve"]) for r in runs)
    curve = [
        statistics.fmean(r["val_curve"][e] for r in runs if e < len(r["val_curve"]))
        for e in range(epochs)
    ]
    first = runs[0]

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in runs)

    def values(key: str) -> list[Any]:
        return sorted({r[key] for r in runs if key in r})

    return {
        "method": name,
        "group": first["group"],
        "kind": first["kind"],
        "note": first.get("note", ""),
        "lambda": first.get("lambda"),
        "bench_width": first.get("bench_width"),
        "seeds": [r["seed"] for r in runs],
        "test_mean": test,
        "test_std": test_std,
        "val_mean": val,
        "val_std": val_std,
        "epochs": first["epochs"],
        "wall_time": mean("wall_time"),
        "samples_per_s": mean("samples_per_s"),
        "params": round(mean("params")),
        "fixed_weights": round(mean("fixed_weights")),
        "val_curve": curve,
        "lr": values("lr"),
        "width": values("width"),
        "reused_from": values("reused_from"),
    }


def notes(row: dict[str, Any]) -> str:
    """The table's note for one method: its own, reuse, an MLP's width and rate."""
    parts = [row["note"]] if row["note"] else []
    if row["reused_from"]:  # an identical config (e.g. widths made equal by --quick)
        parts.append(f"same config and runs as {', '.join(row['reused_from'])}")
    if row["kind"] == "mlp":
        width = "/".join(str(w) for w in row["width"])
        lr = "/".join(f"{v:g}" for v in row["lr"])
        parts.append(f"width {width}, Adam lr {lr} (chosen on validation)")
    return "; ".join(parts)


def table(results: dict[str, Any]) -> str:
    """Markdown: a header saying what was run and how, then one row per method."""
    bench, split = results["bench"], results["split"]
    order = [m["name"] for m in bench["methods"]]
    rows = method_rows(results["records"], order)
    seeds = ", ".join(str(s) for s in bench["seeds"])
    data = bench["data"]
    transform = f", transform {data['transform']}" if data.get("transform") else ""
    lines = [
        f"# darnn bench: {bench['dataset']}{' (quick)' if bench['quick'] else ''}",
        "",
        f"Same data and splits for every method: {split['n_train']} training, "
        f"{split['n_val']} validation (taken from the training set, split_seed "
        f"{data['split_seed']}) and {split['n_test']} test samples, {split['n_features']} "
        f"features{transform}; {bench['epochs']} epochs for every method; seeds {seeds} "
        "(mean ± sample std over seeds).",
        "",
        "Test accuracy is the last epoch's (no epoch, rate or setting is chosen on test); the "
        "MLPs' learning rate is chosen on validation with the first seed and used for the "
        "others, and their test split is evaluated once. `params`: trainable non-zeros "
        "(for darnn: the support of every matrix that learns); `fixed`: non-zero frozen "
        "weights used at prediction. Wall time per run, data loading included (for the "
        "MLPs the first seed's includes the learning-rate search); samples/s in training "
        "steps.",
        "",
        f"Command: `{shlex.join(results['command'])}`. Status: {results['status']}; total "
        f"wall time {results['wall_time']:.0f} s. Split digest {split['split_digest'][:12]}.",
        "",
        "| method | test acc | val acc | epochs | wall s | samples/s | params | fixed | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['test_mean']:.4f} ± {r['test_std']:.4f} | "
            f"{r['val_mean']:.4f} | {r['epochs']} | {r['wall_time']:.0f} | "
            f"{r['samples_per_s']:.0f} | {r['params']:,} | {r['fixed_weights']:,} | "
            f"{notes(r)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(out: Path, plan: Plan, results: dict[str, Any]) -> None:
    """table.md and the plots of ``results`` into ``out`` (plots only with records)."""
    write_text(out / TABLE_FILE, table(results))
    rows = method_rows(results["records"], [m.name for m in plan.methods])
    if not rows:
        return
    title = f"{plan.dataset}{' (quick)' if plan.quick else ''}"
    plot_accuracy_vs_params(out / PARAMS_PLOT, rows, title)
    plot_curves(out / CURVES_PLOT, rows, title)
    chain = [r for r in rows if r["lambda"] is not None]
    if chain:
        plot_lambda(out / LAMBDA_PLOT, rows, chain, title)
    if any(r["bench_width"] is not None for r in rows):
        plot_accuracy_vs_width(out / WIDTH_PLOT, rows, title)


def plot_accuracy_vs_width(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Test accuracy against the width of a width scan, one line per bench entry."""
    scanned = [r for r in rows if r["bench_width"] is not None]
    with figure(path, 1, 1, (8, 5.5)) as axes:
        ax = axes[0][0]
        for group in dict.fromkeys(r["group"] for r in scanned):
            accuracy_curve(ax, [r for r in scanned if r["group"] == group], "bench_width", group)
        ax.set_xscale("log", base=2)
        label_axes(
            ax,
            "hidden units H (darnn: one module; MLP baselines matched per width)",
            "test accuracy (mean ± std over seeds)",
            f"{title}: accuracy vs width",
            legend=True,
        )


def label_axes(ax: Any, xlabel: str, ylabel: str, title: str, *, legend: bool) -> None:
    """Axis labels, title, a light grid and (``legend``) a small legend."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize="small")


def accuracy_curve(ax: Any, rows: list[dict[str, Any]], x: str, label: str) -> None:
    """Test accuracy (mean ± std over seeds) of ``rows`` against their value of ``x``."""
    pts = sorted(rows, key=lambda r: r[x])
    ax.errorbar(
        [r[x] for r in pts],
        [r["test_mean"] for r in pts],
        yerr=[r["test_std"] for r in pts],
        marker="o",
        capsize=3,
        label=label,
    )


def plot_accuracy_vs_params(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Test accuracy (mean and spread over seeds) against trainable parameters."""
    markers = {"darnn": "o", "mlp": "s", "perceptron": "^", "probe": "D"}
    with figure(path, 1, 1, (8, 5.5)) as axes:
        ax = axes[0][0]
        for r in rows:
            ax.errorbar(
                r["params"],
                r["test_mean"],
                yerr=r["test_std"],
                marker=markers[r["kind"]],
                capsize=3,
                linestyle="none",
            )
            ax.annotate(
                r["method"],
                (r["params"], r["test_mean"]),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=7,
            )
        ax.set_xscale("log")
        label_axes(
            ax,
            "trainable non-zero parameters",
            "test accuracy (mean ± std over seeds)",
            f"{title}: accuracy vs parameters (o darnn, □ MLP, △ perceptron, ◇ probe)",
            legend=False,
        )


def plot_curves(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Validation learning curves; the lambda chains in a panel of their own."""
    chain = [r for r in rows if r["lambda"] is not None]
    panels = [[r for r in rows if r["lambda"] is None], chain] if chain else [rows]
    with figure(path, 1, len(panels), (7 * len(panels), 4.5)) as axes:
        for ax, group in zip(axes[0], panels):
            for r in group:
                epochs = range(1, len(r["val_curve"]) + 1)
                ax.plot(epochs, r["val_curve"], marker="o", markersize=3, label=r["method"])
            ax.xaxis.get_major_locator().set_params(integer=True)
            label_axes(
                ax,
                "epoch",
                "validation accuracy (mean over seeds)",
                f"{title}: learning curves" + (" (chains)" if group is chain else ""),
                legend=True,
            )


def plot_lambda(
    path: Path, rows: list[dict[str, Any]], chain: list[dict[str, Any]], title: str
) -> None:
    """Accuracy against the inter-module lambda, per group, with references as lines."""
    with figure(path, 1, 1, (7, 4.5)) as axes:
        ax = axes[0][0]
        groups = sorted({r["group"] for r in chain})
        n_groups = len(groups)
        for group in groups:
            accuracy_curve(ax, [r for r in chain if r["group"] == group], "lambda", group)
        # Single-module darnn references as horizontal lines, named in the legend (text next
        # to the lines overlapped when two references were close).
        references = [
            r
            for r in rows
            if r["kind"] == "darnn" and r["lambda"] is None and math.isfinite(r["test_mean"])
        ]
        for k, r in enumerate(references):
            ax.axhline(
                r["test_mean"],
                linestyle="--",
                linewidth=1.0,
                color=f"C{n_groups + k}",  # the chains took C0 ... C{n_groups - 1}
                label=f"{r['method']} (one module)",
            )
        label_axes(
            ax,
            "inter-module coupling lambda (both ways)",
            "test accuracy (mean ± std)",
            f"{title}: two-module chain vs lambda",
            legend=True,
        )
