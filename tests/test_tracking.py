"""TensorBoard events (issue 17, part 4), read back from the event files.

Every metrics.jsonl number and the field histograms are written; resumed runs append
without repeating a step; sweep trials and bench runs inherit the switch; a missing extra
is a clear error naming it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from darnn import tracking

from cli_helpers import assert_user_error, run_main

TINY = ("data.name=digits", "network.hidden=[20]", "data.limit_train=200")
needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="the tensorboard extra"
)


def read_events(folder: Path) -> tuple[list[tuple[str, int, float]], list[tuple[str, int]]]:
    """Every scalar (tag, step, value) and histogram (tag, step) of ``folder``'s events.

    In file order, duplicates included.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    scalars, histograms = [], []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("histo"):
                    histograms.append((value.tag, event.step))
                elif value.HasField("simple_value"):
                    scalars.append((value.tag, event.step, value.simple_value))
                elif value.HasField("tensor"):  # the loader's migrated form of either kind
                    array = tensor_util.make_ndarray(value.tensor)
                    if array.ndim == 0:
                        scalars.append((value.tag, event.step, float(array)))
                    else:
                        histograms.append((value.tag, event.step))
    return scalars, histograms


def metrics(run: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(run: Path) -> dict[tuple[str, int], float]:
    return {
        (tag, record["epoch"]): value
        for record in metrics(run)
        for tag, value in tracking.scalars(record)
    }


def check_events(run: Path, epochs: list[int], histogram_epochs: list[int]) -> None:
    scalars, histograms = read_events(run / tracking.FOLDER)
    steps = Counter((tag, step) for tag, step, _ in scalars)
    assert max(steps.values()) == 1, "a step was written twice"
    expected = expected_scalars(run)
    assert {k for k in steps} == set(expected)
    for tag, step, value in scalars:
        assert value == pytest.approx(expected[tag, step], rel=1e-6, abs=1e-7), tag
    assert {step for _, step, _ in scalars} == set(epochs)
    for tag in ("train_acc", "val_acc", "test_acc", "unstable", "free_sweeps", "symmetry/0"):
        assert (tag, epochs[-1]) in steps
    assert ("fields/0/internal/aligned", epochs[-1]) in steps
    assert ("samples_per_s", epochs[-1]) in steps
    assert Counter(histograms) == Counter(
        (f"field_histogram/0/{name}", step)
        for step in histogram_epochs
        for name in ("internal", "input", "label")
    )


@needs_tensorboard
def test_every_metric_and_the_field_histograms_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, _, _ = run_main(
        capsys, "train", *TINY, "train.epochs=2", "--tensorboard", "--out", str(run), "--quiet"
    )
    assert code == 0
    check_events(run, [1, 2], [1, 2])
    assert "tensorboard: true" in (run / "config.yaml").read_text()


@needs_tensorboard
def test_resumed_runs_append_without_repeating_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ("train", *TINY, "train.tensorboard=true", "train.epochs=1", "--quiet")
    assert run_main(capsys, *args, "--out", str(run))[0] == 0
    # stop inside epoch 2 (the next --resume continues mid-epoch), then finish at epoch 3
    from darnn import runconfig, rundir, training

    config = runconfig.load_run_config(None, ["train.epochs=2"], base=rundir.read_run_config(run))
    summary = training.train(
        config, run, resume=True, progress=False, on_batch=lambda epoch, done: done == 1
    )
    assert summary["status"] == "interrupted"
    assert run_main(capsys, "train", "--resume", str(run), "train.epochs=3", "--quiet")[0] == 0
    check_events(run, [1, 2, 3], [1, 2, 3])
    assert len(list((run / tracking.FOLDER).glob("events.out.tfevents.*"))) >= 2


@needs_tensorboard
def test_switched_on_at_resume_catches_up_the_earlier_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert run_main(capsys, "train", *TINY, "train.epochs=1", "--out", str(run), "--quiet")[0] == 0
    assert not (run / tracking.FOLDER).exists()
    code, _, _ = run_main(
        capsys, "train", "--resume", str(run), "train.epochs=2", "--tensorboard", "--quiet"
    )
    assert code == 0
    check_events(run, [1, 2], [2])  # epoch 1 from metrics.jsonl (no histograms kept)


def test_a_missing_extra_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out = tmp_path / "run"
    code, _, err = run_main(
        capsys, "train", *TINY, "train.epochs=1", "--tensorboard", "--out", str(out)
    )
    assert_user_error(code, err, "darnn[tensorboard]", "train.tensorboard")
    assert not out.exists()
    code, _, err = run_main(
        capsys, "bench", "--dataset", "digits", "--quick", "--tensorboard", "--out", str(out)
    )
    assert_user_error(code, err, "darnn[tensorboard]")
    assert not out.exists()


@needs_tensorboard
def test_bench_runs_inherit_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    code, _, _ = run_main(
        capsys,
        "bench", "--dataset", "digits", "--quick", "--seeds", "1", "--epochs", "1",
        "--limit-train", "200", "--hidden", "32", "--methods", "darnn,perceptron",
        "--tensorboard", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    run = out / "runs" / "darnn" / "seed0"
    check_events(run, [1], [1])


@needs_tensorboard
@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="the sweep extra")
def test_sweep_trials_inherit_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("learning.lr_j: {low: 0.01, high: 0.1, log: true}\n")
    out = tmp_path / "sweep"
    code, _, err = run_main(
        capsys,
        "sweep", "--space", str(space), "--trials", "1", "--tensorboard", "--out", str(out),
        "--set", "data.name=digits", "--set", "network.hidden=[20]",
        "--set", "data.limit_train=200", "--set", "train.epochs=1",
    )  # fmt: skip
    assert code == 0, err
    (trial,) = [p.parent for p in out.rglob("metrics.jsonl")]
    check_events(trial, [1], [1])
