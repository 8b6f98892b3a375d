"""The ``darnn`` command line: exit codes, one-paragraph errors, train/eval/data list."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from darnn import cli, rundir, training

from cli_helpers import assert_user_error, run_main

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.name=digits",
    "network.hidden=[48]",
    "network.j_density=1.0",
    "network.w_in_density=1.0",
    "train.epochs=1",
    "train.batch_size=32",
    "train.threads=1",
    "train.probe_size=64",
]


def darnn(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m darnn ARGS`` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "darnn", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


# ---------------------------------------------------------------- in a fresh interpreter


def test_unknown_key_exits_2_without_traceback() -> None:
    result = darnn("train", "train.nope=1")
    assert_user_error(result.returncode, result.stderr, "unknown config key 'train.nope'")
    assert result.stdout == ""


def test_bad_yaml_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("network: {hidden: [10,\n")
    result = darnn("train", "--config", str(path))
    assert_user_error(result.returncode, result.stderr, "is not valid YAML", str(path))


def test_data_list_shows_datasets_and_search_paths(tmp_path: Path) -> None:
    result = darnn("data", "list", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["dataset", "available", "path"]
    assert any(line.startswith("digits") and " yes " in line for line in lines)
    assert "where darnn looks" in result.stdout and str(tmp_path) in result.stdout


# ---------------------------------------------------------------- in process


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["train.epochs=2.5"], ["'train.epochs' has value 2.5", "expected int"]),
        (["learning.kappa_out=.inf"], ["kappa_out=inf is not valid"]),
        (["network.j_density=1.5"], ["j_density=1.5 is not valid"]),
        (["data.val_size=1.5"], ["val_size=1.5 is not valid"]),
    ],
)
def test_config_errors_exit_2(
    capsys: pytest.CaptureFixture[str], overrides: list[str], fragments: list[str]
) -> None:
    code, _, err = run_main(capsys, "train", *overrides)
    assert_user_error(code, err, *fragments)


def test_missing_dataset_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_main(
        capsys,
        "train",
        "data.name=mnist",
        "data.download=false",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "run"),
    )
    assert_user_error(code, err, "'mnist' was not found", str(tmp_path))
    assert not (tmp_path / "run").exists()


def test_train_then_eval(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run_main(capsys, "train", *TINY, "--out", str(out), "--seed", "3", "--quiet")
    assert code == 0
    assert stdout.startswith("test accuracy ") and str(out) in stdout
    assert rundir.read_run_config(out).train.seed == 3
    code, stdout, _ = run_main(capsys, "eval", str(out))
    assert code == 0 and stdout.startswith("test accuracy ")
    code, stdout, _ = run_main(capsys, "eval", str(out), "--split", "val", "--dataset", "digits")
    assert code == 0 and stdout.startswith("val accuracy ")
    # The same directory again is refused; nothing in it changes.
    code, _, err = run_main(capsys, "train", *TINY, "--out", str(out))
    assert_user_error(code, err, "already exists and is not empty", "--resume")


def test_eval_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_main(capsys, "eval", str(tmp_path))
    assert_user_error(code, err, "not a darnn run directory")
    out = tmp_path / "run"
    assert run_main(capsys, "train", *TINY, "--out", str(out), "--quiet")[0] == 0
    (out / "model.safetensors").write_bytes(b"\x00" * 16)
    code, _, err = run_main(capsys, "eval", str(out))
    assert_user_error(code, err, "do not match the SHA-256")


def test_ctrl_c_exits_130_and_resume_finishes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ctrl_c(epoch: int, done: int) -> None:
        if done == 5:
            os.kill(os.getpid(), signal.SIGINT)

    real_train = training.train
    monkeypatch.setattr(training, "train", functools.partial(real_train, on_batch=ctrl_c))
    out = tmp_path / "run"
    code, _, err = run_main(capsys, "train", *TINY, "--out", str(out), "--quiet")
    assert code == 130
    assert f"darnn train --resume {out}" in err and "batch 5 of 41" in err
    monkeypatch.setattr(training, "train", real_train)
    code, _, err = run_main(capsys, "train", "--resume", str(out), "--config", "x.yaml")
    assert_user_error(code, err, "do not combine it with --config")
    code, stdout, _ = run_main(capsys, "train", "--resume", str(out), "--quiet")
    assert code == 0 and stdout.startswith("test accuracy ")


def test_no_arguments_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2


def test_yaml_alias_bomb_is_refused_with_a_short_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A billion-laughs document: the error names the key and does not echo megabytes."""
    levels = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"network:\n  hidden: [{', '.join(levels)}]\n")
    code, _, err = run_main(capsys, "train", "--config", str(bomb), "--out", str(tmp_path / "r"))
    assert_user_error(code, err, "network.hidden")
    assert len(err) < 2000
    assert not (tmp_path / "r").exists()
    override = "network.hidden=" + "[" * 50 + "1" + "]" * 50 + "x" * 100_000
    code, _, err = run_main(capsys, "train", override)
    assert code == 2 and len(err) < 2000


def test_network_too_large_for_memory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = run_main(
        capsys, "train", "--out", str(out), "data.name=digits", "network.hidden=[10000000]"
    )
    assert_user_error(code, err, "hidden=[10000000]", "GiB", "sparse couplings")
    assert not out.exists()
