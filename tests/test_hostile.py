"""Hostile and careless inputs of issue 17, part 3.

Each ends in one `darnn: error:` paragraph with exit status 2 (or, for signals, in a
complete run), and a refused --resume leaves its run directory exactly as it was.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from darnn import modelfiles, training
from darnn.errors import ConfigError
from darnn.runconfig import MAX_YAML_VALUES, RunConfig, parse_yaml
from darnn.sweep.space import MAX_TRIAL_EPOCHS, SpaceError, load_space

from cli_helpers import assert_user_error, run_main

TINY = ("data.name=digits", "network.hidden=[20]", "train.epochs=1", "data.limit_train=200")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (model, checkpoint) to tamper with, copied per test."""
    out = tmp_path_factory.mktemp("trained") / "run"
    code = __import__("darnn.cli", fromlist=["main"]).main(
        ["train", *TINY, "--out", str(out), "--quiet"]
    )
    assert code == 0
    return out


def copy_run(source: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in source.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def snapshot(run: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(run.iterdir())}


def edit_checkpoint(run: Path, edit) -> None:  # type: ignore[no-untyped-def]
    """Rewrite the checkpoint with ``edit(state, tensors)`` applied and a valid digest.

    As a user editing it by hand with darnn's own writer would.
    """
    path = run / "checkpoint.safetensors"
    state, tensors = modelfiles.load_checkpoint(path)
    edit(state, tensors)
    modelfiles.save_checkpoint(path, state, tensors)


def nan_weights(tensors: dict[str, torch.Tensor]) -> None:
    name = next(k for k, v in tensors.items() if k.startswith("model.") and v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))


def short_permutation(state: dict, tensors: dict[str, torch.Tensor]) -> None:  # type: ignore[type-arg]
    state["batch"] = 1  # mid-epoch: the saved order is read
    tensors["position.permutation"] = torch.arange(5)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda s, t: s.update(epoch=-5), "epoch=-5"),
        (lambda s, t: s.update(epoch="two"), "epoch='two'"),
        (lambda s, t: s.pop("data_fingerprint"), "training data differ"),
        (lambda s, t: t["rng.order"].zero_(), "generator state rng.order"),
        (lambda s, t: t.update({"rng.dynamics": torch.zeros(3, dtype=torch.uint8)}), "rng.dyn"),
        (lambda s, t: s.update(batch=10**9), "batch=1000000000"),
        (lambda s, t: nan_weights(t), "NaN or infinite"),
        (lambda s, t: short_permutation(s, t), "permutation"),
    ],
    ids=[
        "epoch-negative",
        "epoch-text",
        "no-fingerprint",
        "zero-rng",
        "short-rng",
        "batch-1e9",
        "nan-weights",
        "short-permutation",
    ],
)
def test_refused_resume_writes_nothing(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, fragment: str
) -> None:
    run = copy_run(trained, tmp_path / "run")
    edit_checkpoint(run, edit)
    before = snapshot(run)
    code, _, err = run_main(capsys, "train", "--resume", str(run), "train.epochs=2")
    assert_user_error(code, err, fragment)
    assert snapshot(run) == before  # meta.json included: nothing recorded


def test_accepted_resume_is_recorded(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained, tmp_path / "run")
    code, _, _ = run_main(capsys, "train", "--resume", str(run), "train.epochs=2", "--quiet")
    assert code == 0
    assert len(json.loads((run / "meta.json").read_text())["resumed"]) == 1


def test_resume_of_an_unwritable_run_directory(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    run = copy_run(trained, tmp_path / "run")
    before = snapshot(run)
    if os.geteuid() != 0:  # root writes anyway: then the refusal is simulated
        run.chmod(0o555)
    else:
        real_touch = Path.touch

        def touch(self: Path, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            if self.name.startswith(".write-check"):
                raise PermissionError(13, "Permission denied", str(self))
            real_touch(self, *args, **kwargs)

        monkeypatch.setattr(Path, "touch", touch)
    try:
        code, _, err = run_main(capsys, "train", "--resume", str(run), "train.epochs=2")
    finally:
        run.chmod(0o755)
    assert_user_error(code, err, "cannot be resumed", "Permission denied")
    assert snapshot(run) == before


def test_full_disk_while_checkpointing_keeps_the_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = training.save_position, []

    def save(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        real(*args, **kwargs)

    monkeypatch.setattr(training, "save_position", save)
    out = tmp_path / "run"
    code, _, err = run_main(
        capsys, "train", *TINY, "train.checkpoint_every=2", "--out", str(out), "--quiet"
    )
    assert_user_error(code, err, "No space left on device", "intact", "--resume")
    assert (out / "checkpoint.safetensors").is_file()
    modelfiles.load_checkpoint(out / "checkpoint.safetensors")  # still valid


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.seed=-1", "seed=-1"),
        ("train.seed=1e23", "train.seed"),
        ("train.seed=99999999999999999999999", "below 2**63"),
    ],
)
def test_bad_seeds(override: str, fragment: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_main(capsys, "train", *TINY, override, "--out", str(tmp_path / "r"))
    assert_user_error(code, err, fragment)
    assert "Overflow" not in err
    assert not (tmp_path / "r").exists()


def test_eval_on_an_unknown_device(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "eval", str(trained), "--device", "tpu")
    assert_user_error(code, err, "device='tpu'")


@pytest.mark.parametrize(
    "manifest",
    [
        lambda info: json.dumps({**info, "seed": 0}).replace('"seed": 0', '"seed": ' + "7" * 5000),
        lambda info: "[" * 100_000 + "]" * 100_000,
    ],
    ids=["5000-digit-seed", "deep-brackets"],
)
def test_hostile_model_json(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest
) -> None:
    run = copy_run(trained, tmp_path / "run")
    info = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(manifest(info))
    code, _, err = run_main(capsys, "eval", str(run))
    assert_user_error(code, err, "model.json is not readable JSON")


def test_npz_header_claiming_a_huge_shape_is_refused_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 1000)}
    )
    y = io.BytesIO()
    np.save(y, np.zeros(3))
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("y.npy", y.getvalue())
    code, _, err = run_main(capsys, "train", f"data.name=npz:{path}", "--out", str(tmp_path / "r"))
    assert_user_error(code, err, "claims shape (1000000000000, 1000)", "holds only")


def test_test_classes_absent_from_training_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        X=rng.random((40, 5)),
        y=np.arange(40) % 3,
        X_test=rng.random((6, 5)),
        y_test=np.array([0, 1, 2, 7, 7, 2]),
    )
    code, _, err = run_main(capsys, "train", f"data.name=npz:{path}", "--out", str(tmp_path / "r"))
    assert_user_error(code, err, "y_test holds class 7 that never occurs in y")


def test_unreadable_data_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", "/data/fashion-mnist")

    monkeypatch.setattr(training, "load_data", denied)
    code, _, err = run_main(capsys, "train", *TINY, "--out", str(tmp_path / "r"))
    assert_user_error(code, err, "Permission denied", "/data/fashion-mnist")
    assert not (tmp_path / "r").exists()


def test_yaml_alias_bomb_in_a_space_choices_list_is_bounded(tmp_path: Path) -> None:
    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    space = tmp_path / "bomb.yaml"  # every level inside the choices list itself
    space.write_text(f"network.hidden: {{choices: [{', '.join(levels)}, [10]]}}\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        load_space(space, RunConfig())
    with pytest.raises(ConfigError, match="alias bomb"):
        parse_yaml("a: &a [*a]", "self")
    assert len(parse_yaml("a: &a [1, 2]\nb: [*a, *a]", "ok")["b"]) == 2
    assert MAX_YAML_VALUES >= 10_000


def test_sweep_space_with_an_absurd_epoch_budget_is_refused(tmp_path: Path) -> None:
    space = tmp_path / "long.yaml"
    space.write_text("train.epochs: {low: 1, high: 100000000}\n")
    with pytest.raises(SpaceError, match=f"capped at {MAX_TRIAL_EPOCHS} epochs"):
        load_space(space, RunConfig())
    space.write_text("learning.lr_j: {low: 0.01, high: 0.1}\n")
    with pytest.raises(SpaceError, match="base config"):
        load_space(space, RunConfig.from_dict({"train": {"epochs": 10**8}}))


def test_theory_count_with_an_absurd_budget_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "count"
    code, _, err = run_main(capsys, "theory", "count", "--samples", "100000000", "--out", str(out))
    assert_user_error(code, err, "operations", "hours", "fewer samples")
    assert not out.exists()


def test_second_sigint_during_shutdown_still_writes_every_result(tmp_path: Path) -> None:
    """Ctrl-C twice (and a SIGTERM) while the finished run writes its plots.

    The plots are written, the interpreter exits normally.
    """
    handler = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs under nohup
    script = (
        "import os, signal, sys\n"
        "import darnn.training as t\n"
        "real = t.plot_learning_curves\n"
        "def plot(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    real(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "t.plot_learning_curves = plot\n"
        "from darnn.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, "train", *TINY, "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Fatal Python error" not in result.stderr
    for name in ("model.safetensors", "learning_curves.png", "field_histograms.png"):
        assert (out / name).is_file(), name
    assert "stop signal arrived" in result.stderr
    assert signal.getsignal(signal.SIGINT) is handler  # this process's handler untouched
