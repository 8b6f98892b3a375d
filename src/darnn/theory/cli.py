"""``darnn theory count | access | geometry``: run one experiment into a new run directory.

Each subcommand's options are the keyword arguments of its experiment function, and their
defaults are read from that function's signature, so a default is written once, in the
science. A run claims its directory first (refusing a non-empty one, like ``darnn train``),
records ``config.yaml`` (the experiment's resolved arguments, enough to rerun it from
Python) and ``meta.json``, then writes CSV + PNG; on any failure it removes what it wrote.
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
from typing import Any, TypeVar

import numpy as np

from .. import rundir
from ..config import SCHEDULES
from ..files import write_text
from .access import access_experiment, transition_points
from .counting import MAX_ENUMERATION_N, count_experiment
from .geometry import geometry_experiment
from .plots import plot_access, plot_count, plot_geometry

LARGE_SYNC, LARGE_ASYNC = 10_000, 1600  # what `darnn theory access --large` adds

T = TypeVar("T")


def write_csv(path: Path, rows: Sequence[Any]) -> None:
    """Rows of one dataclass type as a CSV with a header (written atomically)."""
    names = [f.name for f in dataclasses.fields(rows[0])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([getattr(r, k) for k in names] for r in rows)
    write_text(path, buf.getvalue())


# ----- options: the experiment's own keyword arguments ---------------------------------
def _comma_list(cast: Callable[[str], T], what: str) -> Callable[[str], list[T]]:
    """An argparse type for comma-separated values, e.g. "0,0.25,0.5" or "100,400"."""

    def parse(text: str) -> list[T]:
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            msg = f"expected comma-separated {what}, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None

    return parse


_floats = _comma_list(float, "numbers")
_ints = _comma_list(int, "integers")
_strings = _comma_list(str.strip, "names")


class _Options:
    """Add options to one subcommand, each a parameter of its experiment function.

    The option's dest and default are the parameter's name and default.
    """

    def __init__(self, parser: argparse.ArgumentParser, experiment: Callable[..., Any]) -> None:
        self.parser = parser
        self.defaults = {
            name: p.default
            for name, p in inspect.signature(experiment).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    def add(self, flag: str, dest: str, help: str, **kwargs: Any) -> None:
        default = self.defaults[dest]
        listed = isinstance(default, (tuple, list))
        default_text = ",".join(map(str, default)) if listed else str(default)
        if "choices" not in kwargs:  # the flag's name, not the parameter's (--starts STARTS)
            kwargs["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        self.parser.add_argument(
            flag, dest=dest, default=default, help=f"{help} (default {default_text})", **kwargs
        )

    def add_common(self) -> None:
        """--out, --seed and --memory-gib, shared by every experiment."""
        self.parser.add_argument(
            "--out",
            metavar="RUN_DIR",
            help="new run directory for CSV + PNG, absent or empty "
            "(default runs/TIME-theory-EXPERIMENT-PID)",
        )
        self.add("--seed", "seed", "seed of couplings and starts", type=int)
        self.parser.add_argument(
            "--memory-gib",
            type=float,
            default=self.defaults["memory_budget"] / 2**30,
            help="refuse grids whose estimated memory exceeds this many GiB (default %(default)g)",
        )


def _settings(args: argparse.Namespace, experiment: Callable[..., Any]) -> dict[str, Any]:
    """The experiment's keyword arguments from the parsed options, as plain data."""
    if not (args.memory_gib > 0 and math.isfinite(args.memory_gib)):
        raise ValueError(f"--memory-gib={args.memory_gib} is not valid; it must be > 0")
    settings: dict[str, Any] = {}
    for name in inspect.signature(experiment).parameters:
        if name == "memory_budget":
            settings[name] = args.memory_gib * 2**30
        elif name in vars(args):
            value = getattr(args, name)
            settings[name] = list(value) if isinstance(value, (tuple, list)) else value
    return settings


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
    """Register `count`, `access` and `geometry` on the `darnn theory` subparsers."""
    p = subparsers.add_parser(
        "count",
        help="exact fixed-point counts vs the annealed complexity",
        description="Enumerate all 2^N states of random fully asymmetric J (N <= 24) and "
        "compare (1/N) ln E#FP and (1/N) E ln #FP with ln 2 + ln Phi(J_D - kappa).",
    )
    o = _Options(p, count_experiment)
    o.add("--sizes", "sizes", f"comma-separated N (each <= {MAX_ENUMERATION_N})", type=_ints)
    o.add("--j-d", "j_d_values", "comma-separated self-couplings J_D", type=_floats)
    o.add("--kappa", "kappas", "comma-separated margins", type=_floats)
    o.add("--samples", "n_samples", "random couplings per N", type=int)
    o.add("--chunk", "chunk", "states per chunk", type=int)
    o.add_common()
    p.set_defaults(func=_cmd_count)

    p = subparsers.add_parser(
        "access",
        help="fraction of random starts that reach a fixed point",
        description="Relax random starts with the synchronous and asynchronous dynamics "
        "versus J_D, and a two-module chain at J_D = 0 versus lambda.",
    )
    o = _Options(p, access_experiment)
    o.add("--j-d", "j_d_values", "comma-separated J_D for the single module", type=_floats)
    o.add("--lambdas", "lambdas", "comma-separated inter-module λ for the chain", type=_floats)
    o.add("--sync-sizes", "sync_sizes", "comma-separated N, synchronous schedule", type=_ints)
    o.add("--async-sizes", "async_sizes", "comma-separated N, asynchronous schedule", type=_ints)
    o.add("--chain-sizes", "chain_sizes", "comma-separated units per module", type=_ints)
    o.add("--chain-schedules", "chain_schedules", "comma-separated chain schedules", type=_strings)
    p.add_argument(
        "--large",
        action="store_true",
        help=f"add N={LARGE_SYNC} (synchronous) and N={LARGE_ASYNC} (asynchronous): "
        "~7 more minutes",
    )
    o.add("--couplings", "n_couplings", "random J per size", type=int)
    o.add("--starts", "n_starts", "random starts per coupling", type=int)
    o.add("--max-sweeps", "max_sweeps", "sweeps before a run counts as not converged", type=int)
    o.add_common()
    p.set_defaults(func=_cmd_access)

    p = subparsers.add_parser(
        "geometry",
        help="overlaps and local density of reached fixed points",
        description="Overlaps between fixed points reached from random starts, and the "
        "fraction of starts at distance d from one that end at a fixed point within r*d.",
    )
    o = _Options(p, geometry_experiment)
    o.add("--n", "n", "units", type=int)
    o.add("--j-d", "j_d_values", "comma-separated self-couplings J_D", type=_floats)
    o.add("--schedule", "schedule", "dynamics", choices=SCHEDULES)
    o.add("--starts", "n_starts", "random starts per J_D", type=int)
    o.add("--distances", "distances", "comma-separated Hamming distances d", type=_ints)
    o.add("--radii", "radii", "comma-separated return radii r (x d)", type=_floats)
    o.add("--bases", "n_bases", "reached fixed points to perturb", type=int)
    o.add("--trials", "trials", "perturbations per fixed point and d", type=int)
    o.add("--max-sweeps", "max_sweeps", "sweeps before a run counts as not converged", type=int)
    o.add_common()
    p.set_defaults(func=_cmd_geometry)
