"""Tests for darnn.theory.cli (`darnn theory count | access | geometry`).

Outputs, the run directory (claimed, refused when not empty, removed on failure), defaults
read from the experiment functions, and an import of the science without matplotlib or
argparse.
"""

from __future__ import annotations

import argparse
import ast
import csv
import functools
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import darnn.theory
from darnn import cli
from darnn.theory import access, counting, geometry
from darnn.theory import cli as theory_cli

COUNT = ["theory", "count", "--sizes", "6,8", "--j-d", "0,1", "--kappa", "0", "--samples", "3"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darnn theory")
    theory_cli.add_subcommands(p.add_subparsers(dest="command", required=True))
    return p


def _stand_in(experiment: Callable[..., Any], effect: BaseException) -> Callable[..., Any]:
    """Replace ``experiment`` (same signature, so the same options).

    The replacement records its arguments in ``.seen`` and raises ``effect``.
    """

    @functools.wraps(experiment)
    def run(**kwargs: Any) -> Any:
        run.seen = kwargs  # type: ignore[attr-defined]
        raise effect

    return run


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_count_writes_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    assert cli.main([*COUNT, "--seed", "4", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "count.csv",
        "count.png",
        "meta.json",
    ]
    rows = _rows(out / "count.csv")
    assert len(rows) == 4
    assert (out / "count.png").stat().st_size > 1000
    assert "theory count" in capsys.readouterr().out
    # config.yaml holds the experiment's arguments: calling it with them gives the CSV again.
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config.pop("experiment") == "count"
    assert config["sizes"] == [6, 8] and config["seed"] == 4 and config["n_samples"] == 3
    again = counting.count_experiment(**config)
    assert [float(r["mean_count"]) for r in rows] == [r.mean_count for r in again]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 4 and meta["command"][:3] == ["darnn", "theory", "count"]


def test_default_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(COUNT) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.endswith(f"-theory-count-{os.getpid()}")
    assert (run / "count.csv").is_file()


def test_non_empty_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "count.csv").write_text("precious\n")
    assert cli.main([*COUNT, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("darnn: error: ") and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["count.csv"]
    assert (out / "count.csv").read_text() == "precious\n"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli.main([*COUNT, "--out", str(a_file)]) == 2
    assert "not a directory" in capsys.readouterr().err and a_file.read_text() == "x"


def test_failed_run_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = ["theory", "count", "--sizes", "8,26"]
    assert cli.main([*bad, "--out", str(tmp_path / "new")]) == 2
    assert "N <= 24" in capsys.readouterr().err and not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # an existing empty folder is kept, and left empty
    assert cli.main([*bad, "--out", str(empty)]) == 2
    assert list(empty.iterdir()) == []
    assert cli.main([*COUNT, "--memory-gib", "0", "--out", str(empty)]) == 2
    assert "--memory-gib" in capsys.readouterr().err and list(empty.iterdir()) == []

    interrupted = _stand_in(counting.count_experiment, KeyboardInterrupt())
    monkeypatch.setattr(theory_cli, "count_experiment", interrupted)
    assert cli.main([*COUNT, "--out", str(tmp_path / "int")]) == 130
    assert not (tmp_path / "int").exists()
    with pytest.raises(SystemExit):
        _parser().parse_args(["count", "--sizes", "8,x"])


def test_access_and_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _parser()
    args = p.parse_args(
        [
            *("access", "--j-d", "0,1.5", "--lambdas", "0,3", "--sync-sizes", "50"),
            *("--async-sizes", "40", "--chain-sizes", "30", "--couplings", "1", "--starts", "3"),
            *("--max-sweeps", "20", "--out", str(tmp_path / "a")),
        ]
    )
    assert args.func(args) == 0
    rows = _rows(tmp_path / "a" / "access.csv")
    assert len(rows) == 2 + 2 + 3 * 2
    assert (tmp_path / "a" / "access.png").exists()
    args = p.parse_args(
        [
            *("geometry", "--n", "60", "--j-d", "1.5", "--starts", "4", "--distances", "1,8"),
            *("--bases", "2", "--trials", "2", "--out", str(tmp_path / "g")),
        ]
    )
    assert args.func(args) == 0
    assert (tmp_path / "g" / "geometry.png").exists()
    assert _rows(tmp_path / "g" / "returns.csv")
    out = capsys.readouterr().out
    assert "half the runs converge" in out and "J_D=1.5" in out


def test_large_adds_sizes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = _stand_in(access.access_experiment, ValueError("stop here"))
    monkeypatch.setattr(theory_cli, "access_experiment", record)
    argv = ["theory", "access", "--large", "--sync-sizes", f"50,{theory_cli.LARGE_SYNC}"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 2
    seen = record.seen  # type: ignore[attr-defined]
    assert seen["sync_sizes"] == [50, theory_cli.LARGE_SYNC]
    assert seen["async_sizes"] == [100, 300, 900, theory_cli.LARGE_ASYNC]


@pytest.mark.parametrize(
    ("name", "experiment"),
    [
        ("count", counting.count_experiment),
        ("access", access.access_experiment),
        ("geometry", geometry.geometry_experiment),
    ],
)
def test_defaults_come_from_the_experiment(
    name: str, experiment: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare subcommand runs the experiment with exactly its own defaults."""
    record = _stand_in(experiment, ValueError("stop here"))
    monkeypatch.setattr(theory_cli, experiment.__name__, record)
    assert cli.main(["theory", name, "--out", str(tmp_path / name)]) == 2
    seen = dict(record.seen)  # type: ignore[attr-defined]
    assert seen.pop("log") is not None
    params = inspect.signature(experiment).parameters
    assert seen == {
        k: list(p.default) if isinstance(p.default, tuple) else p.default
        for k, p in params.items()
        if k != "log"
    }


def test_option_help_is_the_experiment_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    """Every option's help is its parameter's line in the experiment's Args section."""

    def experiment(alpha: int = 1, beta_values: tuple[float, ...] = (0.5,)) -> None:
        """Summary.

        Args:
            alpha: the first
                continued here.
            beta_values: comma-separated betas.

        Returns:
            Nothing.
        """
        del alpha, beta_values

    assert theory_cli.argument_help(experiment) == {
        "alpha": "the first continued here.",
        "beta_values": "comma-separated betas.",
    }
    for name, experiment in (
        ("count", counting.count_experiment),
        ("access", access.access_experiment),
        ("geometry", geometry.geometry_experiment),
    ):
        helps = theory_cli.argument_help(experiment)
        assert set(inspect.signature(experiment).parameters) == set(helps), name
        with pytest.raises(SystemExit):
            _parser().parse_args([name, "-h"])
        shown = " ".join(capsys.readouterr().out.split())
        for param, text in helps.items():
            if param not in ("log", "memory_budget"):  # --memory-gib has its own help
                assert text.rstrip(".") in shown, (name, param)


def test_science_imports_without_matplotlib_or_argparse() -> None:
    code = (
        "import sys, darnn.theory, darnn.theory.plots; "
        "bad = [m for m in ('matplotlib', 'darnn.theory.cli') if m in sys.modules]; "
        "print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    # torch itself imports argparse, so check the modules' own top-level imports instead.
    package = Path(darnn.theory.__file__).parent
    for path in package.glob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] in ("argparse", "matplotlib") for n in names), path
