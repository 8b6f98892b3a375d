"""The ``darnn bench`` command: argparse glue (the plan, runner and report load when it runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cliargs import add_run_options, name_list, positive_int
from ..config import keywords_for

EXIT_INTERRUPTED = 130


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``darnn bench`` on the subparsers ``commands``; returns its parser."""
    p = commands.add_parser(
        "bench",
        help="darnn against same-parameter MLPs, random features and ablations",
        description="Train and evaluate every method of configs/bench/DATASET.yaml (darnn "
        "recipes and variants, same-parameter backprop MLPs, a perceptron) on the same "
        "splits, for several seeds, with the same epochs; write results.json, table.md and "
        "plots into --out. Selection uses validation only; test accuracy is the last "
        "epoch's.",
    )
    p.add_argument(
        "--dataset",
        required=True,
        metavar="NAME",
        help="a bench file: a path, or the NAME of one that ships (configs/bench/NAME.yaml: "
        "fashion-mnist, fashion-mnist-narrow, entangled-fashion-mnist, digits, mnist, kmnist; "
        "darnn recipes lists them); ./configs/bench/NAME.yaml wins over the shipped one",
    )
    p.add_argument("--seeds", type=positive_int, metavar="N", help="seeds 0..N-1 (default 3)")
    p.add_argument(
        "--quick", action="store_true", help="the bench file's reduced setting (its quick section)"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="new directory (default runs/TIME-bench-NAME); must be absent or empty",
    )
    p.add_argument(
        "--methods",
        type=name_list,
        metavar="A,B,...",
        help="run only these methods (a chain's name selects all its lambda values)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the bench in --out (started with the same options): finished runs "
        "are kept, an interrupted run continues from its checkpoint",
    )
    p.add_argument("--epochs", type=positive_int, metavar="N", help="epochs for every method")
    p.add_argument("--limit-train", type=positive_int, metavar="N", help="keep N training samples")
    p.add_argument(
        "--hidden",
        type=positive_int,
        metavar="N",
        help="total hidden units of every darnn method (a chain splits them in two)",
    )
    add_run_options(
        p,
        device="cpu, cuda or cuda:N for every method",
        tensorboard="every darnn run writes TensorBoard events into "
        "runs/METHOD/seedK/tensorboard (train.tensorboard=true; the tensorboard extra)",
    )
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    """``darnn bench``: returns the exit status."""
    from .. import rundir
    from ..errors import RunError
    from .methods import load_plan
    from .report import TABLE_FILE
    from .runner import run_bench

    plan = load_plan(**keywords_for(load_plan, vars(args)))
    if args.resume and not args.out:
        raise RunError("--resume needs --out: the bench directory to continue")
    if args.tensorboard:
        plan = with_tensorboard(plan)
    name = Path(args.dataset).stem  # a path's file name, or the name itself
    out = Path(args.out) if args.out else rundir.default_run_dir(f"bench-{name}")
    results = run_bench(
        plan, out, command=["darnn", *getattr(args, "argv", [])], resume=args.resume
    )
    print((out / TABLE_FILE).read_text())
    if results["status"] == "interrupted":
        print(
            f"darnn: bench interrupted after {len(results['records'])} runs; {out} holds "
            "their results (results.json, table.md).",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(f"results, table and plots in {out}")
    return 0


def with_tensorboard(plan: Any) -> Any:
    """``plan`` with train.tensorboard on in every darnn method's config.

    The baselines are not darnn training runs and write no events.
    """
    import dataclasses

    from ..tracking import require

    require()  # the missing extra is named before anything runs

    def on(method: Any) -> Any:
        if method.config is None:
            return method
        train = dataclasses.replace(method.config.train, tensorboard=True)
        return dataclasses.replace(method, config=dataclasses.replace(method.config, train=train))

    methods = tuple(on(m) for m in plan.methods)
    return dataclasses.replace(
        plan, methods=methods, all_methods=tuple(on(m) for m in plan.all_methods)
    )
