"""``darnn sweep summary``: the best trials of a study as a table, and PNG plots.

Reads the study without writing to its storage. The plots are Optuna's matplotlib
visualisations: the optimisation history, the parameter importances (they need at least
two complete trials with different values) and a slice plot of each parameter.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .space import Param
from .storage import (
    SweepError,
    import_optuna,
    read_only_storage,
    read_storage,
    shown_url,
    sqlite_path,
    storage_url,
)
from .study import ERROR, METRIC_ATTR, RUN_DIR, SPACE_ATTR, tally

PLOTS = ("optimization_history", "param_importances", "slice")


@dataclass
class Summary:
    """What `summarize` found: the text ``darnn sweep summary`` prints and the plots."""

    study: str
    storage: str
    text: str  # what the command prints
    plots: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # plot name -> why


def open_study(storage: str | None, study: str | None) -> tuple[Any, str]:
    """Load an existing study read-only; --study may be left out when there is only one."""
    optuna = import_optuna()
    if storage is None:
        if study is None:
            raise SweepError(
                "give --storage URL (and --study NAME): the storage the sweep used, e.g. "
                "sqlite:///sweeps/NAME/study.db"
            )
        storage = storage_url(None, Path("sweeps") / study)
    url = storage_url(storage, Path("."))
    stored = read_storage(url, study)
    if study is None and len(stored.names) == 1:
        study = stored.names[0]
        stored = read_storage(url, study)
    if stored.user_attrs is None:
        held = ", ".join(stored.names) if stored.names else "none"
        what = f"study '{study}'" if study else "a --study name"
        raise SweepError(
            f"{what} is not in storage {shown_url(url)} (it holds: {held}); give "
            "--study NAME and the --storage the sweep used"
        )
    return optuna.load_study(study_name=study, storage=read_only_storage(url)), url


def shown_path(path: str) -> str:
    """A run directory relative to the current folder when it lies inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def ranked(study: Any) -> list[Any]:
    """The complete trials, best first (ties: the earlier trial)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: (-t.value, t.number))


def best_table(study: Any, top: int) -> str:
    """The ``top`` complete trials by validation accuracy, best first."""
    metric = study.user_attrs.get(METRIC_ATTR, "val_accuracy")
    done = ranked(study)
    if not done:
        return "no complete trial yet"
    keys = sorted({k for t in done for k in t.params})
    hosts = len({t.user_attrs.get("host") for t in done}) > 1  # run dirs are on their host
    header = ["rank", "trial", metric, *keys, *(["host"] if hosts else []), "run dir"]
    rows = [
        [
            str(rank),
            str(t.number),
            f"{t.value:.4f}",
            *(fmt(t.params.get(k, "-")) for k in keys),
            *([str(t.user_attrs.get("host", "-"))] if hosts else []),
            shown_path(str(t.user_attrs.get(RUN_DIR, "-"))),
        ]
        for rank, t in enumerate(done[:top], 1)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]
    )


def best_overrides(study: Any) -> str | None:
    """The best complete trial's sampled values as ``key=value`` overrides.

    What a bench file's ``overrides`` or ``darnn train`` needs to rerun it (full precision).
    """
    done = ranked(study)
    if not done:
        return None
    best = done[0]
    space = study.user_attrs.get(SPACE_ATTR, {})
    encoded = {
        key
        for key, spec in space.items()
        if "choices" in spec and Param(key, "categorical", choices=tuple(spec["choices"])).encoded
    }
    values = {k: json.loads(v) if k in encoded else v for k, v in best.params.items()}
    # JSON is YAML: floats keep full precision, lists and strings read back as they were
    return " ".join(
        f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in sorted(values.items())
    )


def failure_lines(study: Any, limit: int = 10) -> list[str]:
    from optuna.trial import TrialState

    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    lost = "no error recorded: its worker was killed or lost contact (no heartbeat)"
    lines = [f"  trial {t.number}: {t.user_attrs.get(ERROR, lost)}" for t in failed[:limit]]
    if len(failed) > limit:
        lines.append(f"  ... and {len(failed) - limit} more")
    return lines


def figure_of(axes: Any) -> Any:
    """The matplotlib figure behind what an Optuna plot function returned (Axes or an array)."""
    return axes.figure if hasattr(axes, "figure") else axes.flat[0].figure


def write_plots(study: Any, out_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """Save the PNG plots that the study's trials allow; returns (paths, {skipped: why})."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    metric = study.user_attrs.get(METRIC_ATTR, "val_accuracy")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    skipped: dict[str, str] = {}
    if not complete:
        return [], dict.fromkeys(PLOTS, "no complete trial yet")
    makers = {
        "optimization_history": vis.plot_optimization_history,
        "param_importances": vis.plot_param_importances,
        "slice": vis.plot_slice,
    }
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        makers.pop("param_importances")
        skipped["param_importances"] = (
            "needs at least two complete trials with different accuracies"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = figure_of(make(study, target_name=metric))
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped[name] = " ".join(str(exc).split())
            continue
        width, height = fig.get_size_inches()
        fig.set_size_inches(max(width, 7.0), max(height, 4.5))
        path = out_dir / f"{name}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
            os.replace(tmp, path)
        finally:
            plt.close(fig)
            tmp.unlink(missing_ok=True)
        written.append(path)
    return written, skipped


def summary_lines(study: Any, url: str, top: int) -> list[str]:
    """The text of a study's summary: trial counts, best trials, overrides, failures."""
    counts = tally(study.get_trials(deepcopy=False))
    lines = [
        f"study '{study.study_name}' in {shown_url(url)}: {counts.describe()}",
        "",
        best_table(study, top),
    ]
    overrides = best_overrides(study)
    if overrides is not None:
        lines += ["", f"best trial as overrides: {overrides}"]
    failures = failure_lines(study)
    if failures:
        lines += ["", "failed trials:", *failures]
    return lines


def summarize(
    storage: str | None, study_name: str | None, out: str | None = None, top: int = 10
) -> Summary:
    """Everything ``darnn sweep summary`` prints and draws."""
    if top < 1:
        raise SweepError(f"--top must be an integer >= 1, got {top}")
    study, url = open_study(storage, study_name)
    if out is not None:
        out_dir = Path(out)
    else:
        path = sqlite_path(url)
        out_dir = path.parent if path is not None else Path("sweeps") / study.study_name
    lines = summary_lines(study, url, top)
    plots, skipped = write_plots(study, out_dir)
    if plots:
        lines += ["", "plots:", *(f"  {shown_path(str(p.resolve()))}" for p in plots)]
    for name, why in skipped.items():
        lines.append(f"  {name}: not drawn ({why})")
    return Summary(study.study_name, url, "\n".join(lines), plots, skipped)


__all__ = ["PLOTS", "Summary", "best_table", "summarize", "summary_lines", "write_plots"]
