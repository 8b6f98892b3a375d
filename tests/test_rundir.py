"""The run directory: atomic claim, layout, clean-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from darnn import rundir
from darnn.errors import RunError


def test_claim_is_exclusive_under_a_race(tmp_path: Path) -> None:
    for round_ in range(20):
        out = tmp_path / f"run{round_}"
        if round_ % 2:
            out.mkdir()  # an existing empty folder is claimable too, but only once
        barrier = threading.Barrier(4)
        results: list[object] = []

        def contender(
            out: Path = out, barrier: threading.Barrier = barrier, results: list = results
        ) -> None:
            barrier.wait()
            try:
                results.append(rundir.claim(out))
            except RunError as exc:
                results.append(exc)

        threads = [threading.Thread(target=contender) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(not isinstance(r, RunError) for r in results) == 1, results


def test_claim_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match=r"not empty \(notes\.txt\).*--resume"):
        rundir.claim(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_claim_refuses_unusable_paths(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(RunError, match="not a directory"):
        rundir.claim(tmp_path / "f")
    with pytest.raises(RunError, match="Cannot create the run directory"):
        rundir.claim(tmp_path / "f" / "run")
    with pytest.raises(RunError, match="Cannot create the run directory"):
        rundir.claim(Path("/proc/self/darnn-run"))


def test_default_names_differ_between_processes(tmp_path: Path) -> None:
    code = "from darnn.rundir import default_run_dir; print(default_run_dir('digits'))"
    names = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(names) == 2
    assert str(rundir.default_run_dir("npz:/a/b.npz").name).endswith(f"-b-{os.getpid()}")


def test_run_info_and_discard(tmp_path: Path) -> None:
    out = tmp_path / "run"
    created = rundir.claim(out)
    rundir.write_run_info(out, {"a": {"b": 1}}, seed=3, command=["darnn", "x"])
    assert yaml.safe_load((out / rundir.CONFIG_FILE).read_text()) == {"a": {"b": 1}}
    meta = json.loads((out / rundir.META_FILE).read_text())
    assert meta["seed"] == 3 and meta["command"] == ["darnn", "x"]
    rundir.record_resume(out, ["darnn", "y"])
    assert json.loads((out / rundir.META_FILE).read_text())["resumed"][0]["command"] == [
        "darnn",
        "y",
    ]
    rundir.discard(out, created)
    assert not out.exists()


def test_stray_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".checkpoint.safetensors.abc.tmp").write_text("half")
    (tmp_path / "metrics.jsonl").write_text("{}")
    assert rundir.remove_stray_temporaries(tmp_path) == [".checkpoint.safetensors.abc.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_two_cli_runs_on_one_out_at_once(tmp_path: Path) -> None:
    """Both start at the same moment: exactly one trains, the other is refused cleanly."""
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "darnn", "train", "--quiet", "--out", str(out),
        "data.name=digits", "network.hidden=[32]", "network.j_density=1.0",
        "network.w_in_density=1.0", "train.epochs=1", "train.probe_size=32",
    ]  # fmt: skip
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "darnn: error: Run directory" in refused and "Traceback" not in refused
    assert (out / "model.safetensors").is_file()
