"""`pip install` gives a working tool.

The wheel carries every shipped YAML file, and the installed `darnn` runs shipped recipes,
bench files and spaces by name from an empty folder.

The wheel is built from a copy of the checkout (no build/ or egg-info in the tree) and
installed into a throw-away venv whose own site-packages hold only darnn; its dependencies
(torch, numpy, ...) come from the running environment through a .pth line, so the test
needs no index and no second copy of torch. The .pth's folder is not a site directory,
so the checkout's editable install (a .pth there) stays invisible to the new venv.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_setuptools = pytest.mark.skipif(
    importlib.util.find_spec("setuptools") is None, reason="building a wheel needs setuptools"
)


def build_wheel(tmp: Path) -> Path:
    """Build darnn's wheel from a copy of the checkout's packaging files, src/ and configs/."""
    source = tmp / "source"
    source.mkdir()
    for path in ROOT.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, source / path.name)
    for folder in ("src", "configs"):
        shutil.copytree(
            ROOT / folder,
            source / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
        )
    out = tmp / "dist"
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    cmd = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps"]
    cmd += ["--no-build-isolation", "-q", "-w", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, env=env)
    (wheel,) = out.glob("darnn-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@needs_setuptools
def test_wheel_ships_every_config_file_from_the_one_source(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        expected = {
            f"darnn/configs/{p.relative_to(ROOT / 'configs').as_posix()}"
            for p in (ROOT / "configs").rglob("*.yaml")
        }
        assert expected, "configs/ holds no YAML file"
        assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
        shipped_yaml = {n for n in names if n.endswith(".yaml")}
        assert shipped_yaml == expected  # nothing else, nothing twice
        for name in sorted(expected):  # byte for byte the checkout's files
            assert archive.read(name) == (ROOT / name.removeprefix("darnn/")).read_bytes()
        modules = {
            f"darnn/{p.relative_to(ROOT / 'src' / 'darnn').as_posix()}"
            for p in (ROOT / "src" / "darnn").rglob("*.py")
        }
        assert modules <= names, f"modules missing: {sorted(modules - names)}"
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    for field in ("Summary:", "License-Expression: MIT", "Requires-Python: >=3.10"):
        assert field in text
    assert "Classifier: " in text and "Project-URL: " in text
    assert "Provides-Extra: tensorboard" in text and "Provides-Extra: sweep" in text


@needs_setuptools
@pytest.mark.skipif(importlib.util.find_spec("twine") is None, reason="twine not installed")
def test_twine_check_passes(wheel: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def install_into_venv(wheel: Path, venv: Path) -> Path:
    """A fresh venv holding only darnn; the running environment lends its dependencies."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    lend = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "lent-dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(lend)))
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python)),
            "install",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    return venv / "bin"


@needs_setuptools
def test_installed_tool_runs_shipped_names_from_an_empty_folder(
    wheel: Path, tmp_path: Path
) -> None:
    bindir = install_into_venv(wheel, tmp_path / "venv")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DARNN_DATA")}
    env.update(OMP_NUM_THREADS="1", HOME=str(tmp_path))

    def darnn(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(bindir / "darnn"), *args],
            cwd=empty,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    where = subprocess.run(
        [
            str(bindir / "python"),
            "-c",
            "import darnn, darnn.shipped as s; print(darnn.__file__); print(s.configs_root())",
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(tmp_path / "venv") for p in where), where

    listing = darnn("recipes").stdout
    for name in ("recipe_a_sparse_mnist", "authors/lambda_advantage", "digits", "digits_quick"):
        assert name in listing
    assert str(tmp_path / "venv") in listing  # read from the installed package

    darnn(
        "train",
        "--config",
        "recipe_a_sparse_mnist",
        "data.name=digits",
        "data.limit_train=200",
        "network.hidden=[64]",
        "train.epochs=1",
        "--out",
        "train-run",
        "--quiet",
    )
    assert (empty / "train-run" / "model.safetensors").is_file()
    darnn(
        "bench",
        "--dataset",
        "digits",
        "--quick",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--limit-train",
        "200",
        "--hidden",
        "64",
        "--methods",
        "darnn,perceptron",
        "--out",
        "bench-run",
    )
    assert (empty / "bench-run" / "results.json").is_file()
    sorted_files = sorted(p.name for p in empty.iterdir())
    assert sorted_files == ["bench-run", "train-run"]  # nothing else written
