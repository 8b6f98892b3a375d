"""``darnn theory count | access | geometry``: run one experiment into a new run directory.

Each subcommand's options are the keyword arguments of its experiment function: their
defaults are read from that function's signature and their help from its docstring, so both
are written once, in the science. A run claims its directory first (refusing a non-empty
one, like ``darnn train``), records ``config.yaml`` (the experiment's resolved arguments,
enough to rerun it from Python) and ``meta.json``, then writes CSV + PNG; on any failure it
removes what it wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import inspect
import io
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import rundir
from ..cliargs import comma_list
from ..config import SCHEDULES, keywords_for
from ..files import write_text
from .access import access_experiment, transition_points
from .counting import count_experiment
from .geometry import geometry_experiment
from .plots import plot_access, plot_count, plot_geometry

LARGE_SYNC, LARGE_ASYNC = 10_000, 1600  # what `darnn theory access --large` adds


def write_csv(path: Path, rows: Sequence[Any]) -> None:
    """Rows of one dataclass type as a CSV with a header (written atomically)."""
    names = [f.name for f in dataclasses.fields(rows[0])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([getattr(r, k) for k in names] for r in rows)
    write_text(path, buf.getvalue())


# ----- options: the experiment's own keyword arguments ---------------------------------
_floats = comma_list(float, "numbers")
_ints = comma_list(int, "integers")
_strings = comma_list(str.strip, "names")


# A flag is its parameter's name with dashes and without "n_", except these.
_FLAGS = {"j_d_values": "--j-d", "kappas": "--kappa"}
_LIST_TYPES: dict[type, Callable[[str], list[Any]]] = {int: _ints, float: _floats, str: _strings}
_CHOICES = {"schedule": SCHEDULES}


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.removeprefix("n_").replace("_", "-"))


def argument_help(function: Callable[..., Any]) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring: one text per parameter."""
    helps: dict[str, str] = {}
    lines = (inspect.getdoc(function) or "").splitlines()
    if "Args:" not in lines:
        return helps
    name = ""
    for line in lines[lines.index("Args:") + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section
        if line.startswith(" " * 8) and name:
            helps[name] += " " + line.strip()
        elif ":" in line:
            name, text = (part.strip() for part in line.split(":", 1))
            helps[name] = text
    return helps


def _add_options(parser: argparse.ArgumentParser, experiment: Callable[..., Any]) -> None:
    """One option per parameter of the experiment, with its default and its docstring help.

    The parameters ``log`` and ``memory_budget`` (given as --memory-gib) excepted; --out
    names the run directory.
    """
    helps = argument_help(experiment)
    parser.add_argument(
        "--out",
        metavar="RUN_DIR",
        help="new run directory for CSV + PNG, absent or empty "
        "(default runs/TIME-theory-EXPERIMENT-PID)",
    )
    for name, param in inspect.signature(experiment).parameters.items():
        default = param.default
        if name in ("log", "memory_budget"):
            continue
        kwargs: dict[str, Any] = {"choices": _CHOICES[name]} if name in _CHOICES else {}
        if isinstance(default, (tuple, list)):
            kwargs["type"] = _LIST_TYPES[type(default[0])]
            default_text = ",".join(map(str, default))
        else:
            kwargs.setdefault("type", type(default))
            default_text = str(default)
        flag = _flag(name)
        if "choices" not in kwargs:  # the flag's name, not the parameter's (--starts STARTS)
            kwargs["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(
            flag,
            dest=name,
            default=default,
            help=f"{helps[name].rstrip('.')} (default {default_text})",
            **kwargs,
        )
    parser.add_argument(
        "--memory-gib",
        type=float,
        default=inspect.signature(experiment).parameters["memory_budget"].default / 2**30,
        help="refuse grids whose estimated memory exceeds this many GiB (default %(default)g)",
    )


def _settings(args: argparse.Namespace, experiment: Callable[..., Any]) -> dict[str, Any]:
    """The experiment's keyword arguments from the parsed options, as plain data."""
    if not (args.memory_gib > 0 and math.isfinite(args.memory_gib)):
        raise ValueError(f"--memory-gib={args.memory_gib} is not valid; it must be > 0")
    settings = keywords_for(experiment, vars(args), memory_budget=args.memory_gib * 2**30)
    return {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in settings.items()}


@contextlib.contextmanager
def _new_run(args: argparse.Namespace, name: str, settings: dict[str, Any]) -> Iterator[Path]:
    """Claim the run directory and record the settings; undo both if the block fails."""
    out = Path(args.out) if args.out else rundir.default_run_dir(f"theory-{name}")
    created = rundir.claim(out, resumable=False)
    try:
        argv = getattr(args, "argv", None)  # set by darnn.cli.main
        rundir.write_run_info(
            out,
            {"experiment": name, **settings},
            seed=settings["seed"],
            command=None if argv is None else ["darnn", *argv],
        )
        yield out
    except BaseException:  # a failed or interrupted run leaves nothing behind
        rundir.discard(out, created)
        raise


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # stdout keeps only the summary


# ----- the three experiments ---------------------------------------------------------
def _cmd_count(args: argparse.Namespace) -> int:
    """Exact fixed-point counts vs the annealed complexity.

    Enumerate all 2^N states of random fully asymmetric J (N <= 24) and compare (1/N) ln E#FP
    and (1/N) E ln #FP with ln 2 + ln Phi(J_D - kappa).
    """
    t0 = time.perf_counter()
    settings = _settings(args, count_experiment)
    with _new_run(args, "count", settings) as out:
        rows = count_experiment(**settings, log=_progress)
        write_csv(out / "count.csv", rows)
        plot_count(rows, out / "count.png")
    sizes, kappa = settings["sizes"], settings["kappas"][0]
    print(
        f"theory count: N={','.join(map(str, sizes))}, {settings['n_samples']} couplings each, "
        f"{time.perf_counter() - t0:.1f}s -> {out}"
    )
    for r in rows:
        if r.n == max(sizes) and r.kappa == kappa:
            print(
                f"  N={r.n} J_D={r.j_d:<5g} kappa={r.kappa:g}: (1/N)ln E#={r.complexity:+.3f} "
                f"(exact {r.annealed_n:+.3f}, N->inf {r.annealed:+.3f}), "
                f"(1/N)E ln#={r.quenched:+.3f}"
            )
    return 0


def _cmd_access(args: argparse.Namespace) -> int:
    """Fraction of random starts that reach a fixed point.

    Relax random starts with the synchronous and asynchronous dynamics versus J_D, and a
    two-module chain at J_D = 0 versus lambda.
    """
    t0 = time.perf_counter()
    settings = _settings(args, access_experiment)
    if args.large:
        for key, n in (("sync_sizes", LARGE_SYNC), ("async_sizes", LARGE_ASYNC)):
            settings[key] += [] if n in settings[key] else [n]
    with _new_run(args, "access", settings) as out:
        rows = access_experiment(**settings, log=_progress)
        write_csv(out / "access.csv", rows)
        plot_access(rows, out / "access.png", settings["max_sweeps"])
    print(f"theory access: {time.perf_counter() - t0:.1f}s -> {out}")
    for (model, schedule, n), x in transition_points(rows).items():
        name = "J_D" if model == "single" else "lambda"
        print(f"  {model:6s} {schedule:12s} N={n:<6d} half the runs converge at {name} ~ {x:.3g}")
    return 0


def _cmd_geometry(args: argparse.Namespace) -> int:
    """Overlaps and local density of reached fixed points.

    Overlaps between fixed points reached from random starts, and the fraction of starts at
    distance d from one that end at a fixed point within r*d.
    """
    t0 = time.perf_counter()
    settings = _settings(args, geometry_experiment)
    with _new_run(args, "geometry", settings) as out:
        res = geometry_experiment(**settings, log=_progress)
        if res.overlaps:
            write_csv(out / "overlaps.csv", res.overlaps)
        if res.returns:
            write_csv(out / "returns.csv", res.returns)
        plot_geometry(res, out / "geometry.png")
    print(
        f"theory geometry: N={settings['n']}, {settings['schedule']}, "
        f"{time.perf_counter() - t0:.1f}s -> {out}"
    )
    for j_d, frac in res.reached.items():
        q = np.array([r.q for r in res.overlaps if r.j_d == j_d and r.kind == "fp-fp"])
        q0 = np.array([r.q for r in res.overlaps if r.j_d == j_d and r.kind == "start-fp"])
        ret = {(r.d, r.radius): r.fraction for r in res.returns if r.j_d == j_d}
        d_mid = sorted({d for d, _ in ret})[len({d for d, _ in ret}) // 2] if ret else None
        msg = f"  J_D={j_d:g}: reached {frac:.2f}"
        if q.size:
            msg += f", q(fp,fp)={q.mean():+.3f}±{q.std():.3f}"
        if q0.size:
            msg += f", q(start,fp)={q0.mean():.3f}"
        if d_mid is not None:
            msg += f", d={d_mid}: " + ", ".join(
                f"r={r:g}:{ret[(d_mid, r)]:.2f}" for r in settings["radii"]
            )
        print(msg)
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Register `count`, `access` and `geometry` on the `darnn theory` subparsers.

    A command's help is its function's first docstring line, its description the rest.
    """
    for experiment, command in (
        (count_experiment, _cmd_count),
        (access_experiment, _cmd_access),
        (geometry_experiment, _cmd_geometry),
    ):
        summary, _, description = (inspect.getdoc(command) or "").partition("\n\n")
        name = experiment.__name__.removesuffix("_experiment")
        help_text = summary[:1].lower() + summary[1:].rstrip(".")
        p = subparsers.add_parser(name, help=help_text, description=description)
        _add_options(p, experiment)
        if experiment is access_experiment:
            p.add_argument(
                "--large",
                action="store_true",
                help=f"add N={LARGE_SYNC} (synchronous) and N={LARGE_ASYNC} (asynchronous): "
                "~7 more minutes",
            )
        p.set_defaults(func=command)
