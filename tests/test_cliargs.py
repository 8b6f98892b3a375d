"""Tests for darnn.cliargs: the argparse types and the options shared by training commands."""

from __future__ import annotations

import argparse

import pytest

from darnn.cliargs import add_run_options, comma_list, name_list, positive_int


def test_positive_int() -> None:
    assert positive_int("3") == 3
    for bad in ("0", "-2", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="not an integer >= 1"):
            positive_int(bad)


def test_name_list() -> None:
    assert name_list(" a, b ,,c") == ["a", "b", "c"]
    with pytest.raises(argparse.ArgumentTypeError, match="one or more"):
        name_list(" , ")


def test_comma_list() -> None:
    floats = comma_list(float, "numbers")
    assert floats("0,0.25, 1") == [0.0, 0.25, 1.0]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated numbers, got 'a,1'"):
        floats("a,1")


@pytest.mark.parametrize("unset", [False, None])
def test_add_run_options(unset: bool | None) -> None:
    p = argparse.ArgumentParser()
    add_run_options(p, device="where", tensorboard="events", unset=unset)
    args = p.parse_args([])
    assert (args.data_dir, args.device, args.tensorboard) == (None, None, unset)
    args = p.parse_args(["--data-dir", "d", "--device", "cpu", "--tensorboard"])
    assert (args.data_dir, args.device, args.tensorboard) == ("d", "cpu", True)
    assert "where" in p.format_help() and "events" in p.format_help()
