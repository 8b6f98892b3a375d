"""Argparse value types and options shared by the subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def positive_int(text: str) -> int:
    """Argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def name_list(text: str) -> list[str]:
    """Argparse type: one or more names separated by commas."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give one or more method names separated by commas")
    return names


def comma_list(cast: Callable[[str], T], what: str) -> Callable[[str], list[T]]:
    """An argparse type for comma-separated values, e.g. "0,0.25,0.5" or "100,400"."""

    def parse(text: str) -> list[T]:
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            msg = f"expected comma-separated {what}, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None

    return parse


def add_run_options(
    parser: argparse.ArgumentParser, *, device: str, tensorboard: str, unset: bool | None = False
) -> None:
    """--data-dir, --device and --tensorboard, the options every training command takes.

    ``device`` and ``tensorboard`` are their help texts; ``unset`` is --tensorboard's value
    when it is not given (None: the config decides).
    """
    parser.add_argument("--data-dir", metavar="DIR", help="folder searched first for data files")
    parser.add_argument("--device", help=device)
    parser.add_argument("--tensorboard", action="store_true", default=unset, help=tensorboard)
