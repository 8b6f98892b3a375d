"""The ``darnn`` command: train, eval, data list, theory.

User errors (bad config, missing data, corrupt files, ...) end with one paragraph
``darnn: error: ...`` on stderr and exit status 2; Ctrl-C during training saves a
checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .cliargs import add_run_options

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def build_parser() -> argparse.ArgumentParser:
    """The ``darnn`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="darnn",
        description="Dynamical learning in deep asymmetric recurrent networks (arXiv:2509.05041).",
    )
    parser.add_argument("--version", action="version", version=f"darnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_train(commands)
    add_eval(commands)

    p = commands.add_parser(
        "recipes",
        help="list the recipes, bench files and search spaces that ship with darnn",
        description="Every YAML file that ships with darnn, by the name --config (recipes), "
        "darnn bench --dataset (bench files) and darnn sweep --space (search spaces) accept, "
        "with the first line of its header. A file path, or the same name under ./configs, "
        "wins over a shipped name.",
    )
    p.add_argument("--paths", action="store_true", help="also print where each file is")
    p.set_defaults(func=cmd_recipes)

    p = commands.add_parser("data", help="datasets: list what is installed")
    data_commands = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_commands.add_parser(
        "list", help="table of datasets, where each was found or where darnn looked"
    )
    q.add_argument("--data-dir", metavar="DIR", help="also search this folder first")
    q.set_defaults(func=cmd_data_list)

    from .theory import cli as theory  # each experiment registers its own subcommand

    p = commands.add_parser(
        "theory", help="numerical checks of the theory (docs/model.md#theory-quantities)"
    )
    theory.add_subcommands(
        p.add_subparsers(dest="theory_command", required=True, metavar="EXPERIMENT")
    )

    from . import sweep  # registers its options; Optuna is imported only when a sweep runs

    p = commands.add_parser("sweep", help="hyperparameter sweeps on Optuna (+ summary)")
    sweep.add_subcommands(p)

    from . import bench  # darnn against baselines

    bench.add_parser(commands)
    return parser


def add_train(commands: Any) -> None:
    """The ``darnn train`` command and its options."""
    p = commands.add_parser(
        "train",
        help="train a network and print its test accuracy",
        description="Train the default recipe (Fashion-MNIST), or --config FILE, with overrides "
        "section.key=value, e.g. network.hidden=[800,800] learning.lr_j=0.01 train.epochs=3.",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="override one config value (parsed as YAML)",
    )
    p.add_argument(
        "--config",
        metavar="FILE|NAME",
        help="YAML run config (sections data, network, learning, train): a file, or the name "
        "of a shipped recipe such as recipe_a_sparse_mnist or authors/lambda_advantage "
        "(darnn recipes lists them); omitted keys keep the default recipe",
    )
    p.add_argument(
        "--out",
        metavar="RUN_DIR",
        help="new run directory (default: runs/TIME-DATASET); must be absent or empty",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--seed", type=int, help="= train.seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    add_run_options(
        p,
        device="cpu, cuda or cuda:N (= train.device)",
        tensorboard="also write TensorBoard events to RUN_DIR/tensorboard "
        "(= train.tensorboard=true; needs the tensorboard extra)",
        unset=None,
    )
    p.set_defaults(func=cmd_train)


def add_eval(commands: Any) -> None:
    """The ``darnn eval`` command and its options."""
    p = commands.add_parser(
        "eval",
        help="accuracy of a trained run's model",
        description="Load RUN_DIR's model and print its accuracy.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--dataset",
        metavar="NAME",
        help="another dataset with the same input size (default: the run's)",
    )
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--data-dir", metavar="DIR", help="folder searched first for data files")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_eval)


# ---------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    """``darnn train``: returns the exit status."""
    from . import distributed, runconfig, rundir, shipped, training

    options = {
        "train": {"device": args.device, "seed": args.seed, "tensorboard": args.tensorboard},
        "data": {"data_dir": args.data_dir},
    }
    settings = {
        section: {k: v for k, v in keys.items() if v is not None}
        for section, keys in options.items()
    }
    if args.resume:
        if args.config or args.out:
            raise runconfig.ConfigError(
                "--resume RUN_DIR continues that run with its own "
                "config.yaml; do not combine it with --config or --out"
            )
        out = Path(args.resume)
        config = runconfig.load_run_config(
            None, args.overrides, settings=settings, base=rundir.read_run_config(out)
        )
    else:
        path = None if args.config is None else shipped.find("recipe", args.config)
        config = runconfig.load_run_config(path, args.overrides, settings=settings)
        out = Path(args.out) if args.out else rundir.default_run_dir(config.data.name)
    summary = training.train(
        config,
        out,
        resume=bool(args.resume),
        progress=not args.quiet,
        command=["darnn", *args.argv],
    )
    if distributed.launched_world_size() > 1 and os.environ.get("RANK", "0") != "0":
        return EXIT_INTERRUPTED if summary["status"] == "interrupted" else 0  # rank 0 reports
    if summary["status"] == "interrupted":
        pos = summary["position"]
        print(
            f"darnn: interrupted at epoch {pos['epoch'] + 1}, batch {pos['batch']} of "
            f"{pos['n_batches']}; a checkpoint of that exact position is in {out}. "
            f"Continue with: darnn train --resume {out}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    val = summary["val_acc"]
    epochs = summary["epochs"]
    print(
        f"test accuracy {summary['test_acc']:.4f}"
        + ("" if val is None else f" (validation {val:.4f})")
        + f" after {epochs} epoch{'s' if epochs != 1 else ''}, {summary['wall_time']:.0f} s; "
        f"run directory: {out}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``darnn eval``: returns the exit status."""
    import torch

    from .data import load_data
    from .devices import resolve_device
    from .errors import RunError
    from .learning import evaluate
    from .modelfiles import load_model
    from .rundir import MODEL_STEM, read_run_config

    run_dir = Path(args.run_dir)
    config = read_run_config(run_dir)
    device = resolve_device(args.device)
    net = load_model(run_dir / MODEL_STEM, device=device)
    data = load_data(config.data, name=args.dataset, data_dir=args.data_dir)
    if data.n_features != net.n_features or data.n_classes > net.n_classes:
        raise RunError(
            f"{data.name} has {data.n_features} features and {data.n_classes} classes, but the "
            f"model of {run_dir} takes {net.n_features} features and {net.n_classes} classes."
        )
    X, y = {
        "train": (data.X_train, data.y_train),
        "val": (data.X_val, data.y_val),
        "test": (data.X_test, data.y_test),
    }[args.split]
    if len(X) == 0:
        raise RunError(f"the {args.split} split of {data.name} is empty.")
    start = time.perf_counter()
    result = evaluate(
        net, torch.from_numpy(X), torch.from_numpy(y), config.learning, config.train.eval_batch_size
    )
    print(
        f"{args.split} accuracy {result['accuracy']:.4f} on {data.name} ({len(X)} samples, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    """``darnn recipes``: returns the exit status."""
    from . import shipped

    entries = shipped.catalogue()
    if not entries:
        print("darnn: no shipped files found (a broken install?)", file=sys.stderr)
        return EXIT_USAGE
    usage = {
        "recipe": "darnn train --config NAME",
        "bench": "darnn bench --dataset NAME",
        "space": "darnn sweep --space NAME",
    }
    for kind in shipped.FOLDERS:
        rows = [e for e in entries if e.kind == kind]
        if not rows:
            continue
        print(f"{shipped.WHAT[kind]}s ({usage[kind]}):")
        width = max(len(e.name) for e in rows)
        for e in rows:
            print(f"  {e.name.ljust(width)}  {e.description}".rstrip())
            if args.paths:
                print(f"  {' ' * width}  {e.path}")
        print()
    print(f"from {shipped.configs_root()}; a file path or ./configs/... wins over a name.")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    """``darnn data list``: returns the exit status."""
    from . import data

    rows = data.list_datasets(args.data_dir)
    table = [("dataset", "available", "path")] + [
        (str(r["name"]), "yes" if r["available"] else "no", str(r["path"] or "-")) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("\nwhere darnn looks, in order:")
    for r in rows:
        paths = data.search_paths(str(r["name"]), args.data_dir)
        where = ", ".join(str(p) for p in paths) if paths else "built into scikit-learn"
        print(f"  {r['name']}: {where}")
    print("\nAny other data: data.name=npz:PATH (arrays X and y, optionally X_test and y_test).")
    return 0


# ---------------------------------------------------------------- entry point


def _one_line_fallbacks(show: Callable[..., None]) -> Callable[..., None]:
    """``show`` (a warnings.showwarning), but darnn's fallback notices as their one line."""
    from .fused import FusedKernelWarning

    def shown(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, FusedKernelWarning):
            print(message, file=sys.stderr if file is None else file)
        else:
            show(message, category, filename, lineno, file, line)

    return shown


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    from .data import DataError
    from .errors import RunError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in the run's meta.json
    # The theory experiments validate their arguments with ValueError before any work.
    user_errors = (RunError, DataError, *((ValueError,) if args.command == "theory" else ()))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_fallbacks(warnings.showwarning)
            return int(args.func(args))
    except user_errors as exc:
        message = " ".join(str(exc).split())  # one paragraph, whatever the source wrapped
        print(f"darnn: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("darnn: aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # unreadable folder, read-only or full disk, ...: not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"darnn: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
