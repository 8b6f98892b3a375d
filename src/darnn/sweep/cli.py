"""The ``darnn sweep`` command and its ``summary`` subcommand (argparse glue only)."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from ..cliargs import add_run_options
from ..config import keywords_for

EXIT_INTERRUPTED, EXIT_WORKER_FAILED = 130, 1


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Options of ``darnn sweep`` on ``parser``, and its ``summary`` subcommand."""
    from .study import METRICS, PRUNERS

    parser.description = (
        "Search hyperparameters with Optuna: each trial is an ordinary darnn train run "
        "directory, scored on validation accuracy. The study lives in --storage (a SQLite "
        "file in the sweep directory by default); the same command with the same "
        "--storage/--study on another machine joins it, and re-running it resumes it. "
        "Needs the sweep extra: pip install -e '.[sweep]'."
    )
    parser.add_argument("--config", metavar="BASE.yaml", help="base run config (default recipe)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="section.key=value",
        dest="overrides",
        help="override one value of the base config, as in darnn train (repeatable)",
    )
    parser.add_argument(
        "--space",
        help="search space: config keys and their ranges; a SPACE.yaml file or a shipped "
        "name such as digits_quick (darnn recipes lists them)",
    )
    parser.add_argument("--trials", type=int, metavar="N", help="finished trials to reach")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="K", help="local worker processes (default 1)"
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="SQLAlchemy URL shared by all workers, e.g. "
        "postgresql+psycopg://USER:PASSWORD@HOST/DB (default: sqlite file OUT/study.db)",
    )
    parser.add_argument("--study", metavar="NAME", help="study name (default: the space's stem)")
    parser.add_argument(
        "--out", metavar="DIR", help="sweep directory for trial runs (default: sweeps/NAME)"
    )
    parser.add_argument("--metric", choices=tuple(METRICS), default="val_accuracy")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="start no new trial after S seconds (the study can be resumed)",
    )
    parser.add_argument("--pruner", choices=PRUNERS, default="median")
    parser.add_argument(
        "--startup-trials",
        type=int,
        default=5,
        metavar="N",
        help="complete trials sampled at random and never pruned before TPE and the median "
        "pruner take over (default 5)",
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="S",
        help="a trial whose worker sent no heartbeat for 2*S seconds is marked failed and "
        "queued again (default 60)",
    )
    parser.add_argument("--sampler-seed", type=int, metavar="SEED", help="seed of TPE sampling")
    add_run_options(
        parser,
        device="cpu, cuda or cuda:N for this machine's trials",
        tensorboard="every trial writes TensorBoard events into its run directory "
        "(= --set train.tensorboard=true)",
    )
    parser.set_defaults(func=cmd_sweep)
    add_summary(parser.add_subparsers(dest="sweep_command", metavar="ACTION"))


def add_summary(actions: Any) -> None:
    """The ``darnn sweep summary`` subcommand."""
    p = actions.add_parser(
        "summary",
        help="best trials as a table, and PNG plots",
        description="Print a study's best trials (parameters, validation accuracy, run "
        "directory) and its failed trials; draw the optimisation history, the parameter "
        "importances and a slice plot as PNG files.",
    )
    p.add_argument("--storage", metavar="URL", help="the sweep's storage URL or SQLite file")
    p.add_argument("--study", metavar="NAME", help="study name (optional if there is only one)")
    p.add_argument(
        "--out", metavar="DIR", help="folder for the PNG plots (default: the SQLite file's)"
    )
    p.add_argument("--top", type=int, default=10, metavar="N", help="trials in the table")
    p.set_defaults(func=cmd_summary)


def cmd_sweep(args: argparse.Namespace) -> int:  # noqa: D103 - at the 80-line limit
    from .storage import SweepError, shown_url
    from .study import RUN_DIR, prepare_sweep, say
    from .summary import fmt
    from .workers import run_sweep

    if args.space is None or args.trials is None:
        raise SweepError(
            "darnn sweep needs --space SPACE.yaml and --trials N (see configs/spaces/ and "
            "darnn sweep --help); for results use: darnn sweep summary --storage URL"
        )
    if args.workers < 1:
        raise SweepError(f"--workers must be an integer >= 1, got {args.workers}")
    settings = {
        "train": {
            **({"device": args.device} if args.device else {}),
            **({"tensorboard": True} if args.tensorboard else {}),
        },
        "data": {"data_dir": args.data_dir} if args.data_dir else {},
    }
    argv = list(getattr(args, "argv", []) or [])
    from .. import shipped  # a shipped name or a path (darnn recipes lists the names)

    spec = prepare_sweep(  # --trials, --storage, --metric, ... under their own names
        **keywords_for(
            prepare_sweep,
            vars(args),
            space_path=str(shipped.find("space", args.space)),
            config_path=None if args.config is None else str(shipped.find("recipe", args.config)),
            config_overrides=args.overrides,
            settings=settings,
            command=["darnn", *argv],
        )
    )
    storage_text = shown_url(spec.storage)
    result = run_sweep(
        spec,
        args.workers,
        on_start=lambda: say(
            f"study '{spec.study}' in {storage_text}: {spec.trials} trials, {args.workers} local "
            f"worker(s); trial runs under {spec.out_dir}/trials"
        ),
    )
    counts = result.tally
    say(f"study '{spec.study}': {counts.describe()}")
    if result.best is not None:
        best = result.best
        params = ", ".join(f"{k}={fmt(v)}" for k, v in best.params.items())
        say(
            f"best: trial {best.number}, {spec.metric} {best.value:.4f} ({params}); "
            f"run directory {best.user_attrs.get(RUN_DIR, '-')}"
        )
    say(
        f"table and plots: darnn sweep summary --storage {shlex.quote(storage_text)} --study "
        f"{shlex.quote(spec.study)}"
    )
    for failure in result.worker_failures:
        print(f"darnn: error: {failure}", file=sys.stderr)
    again = shlex.join(["darnn", *argv]) if argv else "the same command"
    if result.interrupted:
        print(
            f"darnn: sweep interrupted with {counts.finished} of {spec.trials} trials finished; "
            f"interrupted trials are queued again. Resume with: {again}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if result.worker_failures:
        return EXIT_WORKER_FAILED
    if counts.finished < spec.trials:
        say(
            f"stopped at the timeout with {counts.finished} of {spec.trials} trials finished; "
            f"resume with: {again}"
        )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """``darnn sweep summary``: returns the exit status."""
    from .summary import summarize

    print(summarize(args.storage, args.study, args.out, args.top).text)
    return 0


__all__ = ["add_subcommands", "cmd_summary", "cmd_sweep"]
