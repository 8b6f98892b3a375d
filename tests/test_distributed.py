"""Data-parallel training: K gloo processes on loopback equal one process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from darnn.modelfiles import load_checkpoint, load_model
from darnn.runconfig import load_run_config
from darnn.training import train

# 320 training samples, global batch 16: 20 steps per epoch. float64 keeps every field far
# from the rounding that differently shaped products could flip.
SMALL = [
    "data.name=digits",
    "data.limit_train=320",
    "data.val_size=100",
    "network.hidden=[40]",
    "network.w_in_density=1.0",
    "train.batch_size=16",
    "train.epochs=1",
    "train.dtype=float64",
    "train.probe_size=16",
    "train.threads=1",
]
DENSE = [*SMALL, "network.j_density=1.0"]
CSR = [*SMALL, "network.j_density=0.2", "network.sparse_format=csr"]

WORKER = """
import json, os, sys
from darnn.runconfig import load_run_config
from darnn.errors import RunError
from darnn.training import train

args = json.loads(sys.argv[1])
rank = int(os.environ.get("RANK", "0"))

def on_batch(epoch, done):
    if args.get("die") == [rank, epoch, done]:
        os._exit(9)
    return [epoch, done] == args.get("stop")

try:
    summary = train(load_run_config(None, args["overrides"]), args["out"],
                    resume=args.get("resume", False), progress=False, on_batch=on_batch)
except RunError as exc:
    print("darnn: error: " + " ".join(str(exc).split()), file=sys.stderr)
    sys.exit(2)
print(json.dumps(summary))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    world: int, out: Path, overrides: list[str], **extra: object
) -> list[tuple[int, str, str]]:
    """Run WORKER as `world` ranks (the environment torchrun would set); (rc, out, err) each."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        args = json.dumps({"out": str(out), "overrides": overrides, **extra})
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        results.append((p.returncode, stdout, stderr))
    return results


def torchrun_train(out: Path, overrides: list[str]) -> list[str]:
    """The README's launch: `darnn train` under torchrun with 2 processes on loopback."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", str(free_port()), "-m", "darnn", "train", "--quiet", "--out", str(out),
        *overrides,
    ]  # fmt: skip


def assert_close_weights(a: Path, b: Path, exact: bool = False) -> None:
    sa, sb = load_model(a / "model").state_dict(), load_model(b / "model").state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        if exact:
            assert torch.equal(sa[name], sb[name]), name
        else:
            torch.testing.assert_close(sa[name], sb[name], rtol=1e-5, atol=1e-9, msg=name)


@pytest.mark.parametrize("overrides", [DENSE, CSR], ids=["dense", "csr"])
def test_two_ranks_equal_one_process(tmp_path: Path, overrides: list[str]) -> None:
    train(load_run_config(None, overrides), tmp_path / "one", progress=False)
    results = launch(2, tmp_path / "two", overrides)
    assert [rc for rc, _, _ in results] == [0, 0], results
    assert_close_weights(tmp_path / "one", tmp_path / "two")
    one = json.loads((tmp_path / "one" / "metrics.jsonl").read_text())
    two = json.loads((tmp_path / "two" / "metrics.jsonl").read_text())
    for key in ("train_acc", "val_acc", "test_acc", "converged", "eval_sweeps"):
        assert one[key] == pytest.approx(two[key]), key


def test_three_ranks_with_uneven_slices(tmp_path: Path) -> None:
    """16 samples over 3 ranks (6, 6, 4 + 2 padding) and a last batch of 4 < 3 * 6.

    The readout learns from the label-free state (gathered like s*).
    """
    overrides = [*DENSE, "data.limit_train=308", "learning.readout_state=eval"]
    train(load_run_config(None, overrides), tmp_path / "one", progress=False)
    results = launch(3, tmp_path / "three", overrides)
    assert [rc for rc, _, _ in results] == [0, 0, 0], results
    assert_close_weights(tmp_path / "one", tmp_path / "three")


def test_authors_protocol_three_ranks_equal_one_process(tmp_path: Path) -> None:
    """The authors' protocol on 3 ranks with uneven slices equals one process.

    Readout neurons, skips, stochastic sweeps (masks drawn for the whole batch on every
    rank) and double dynamics + double update.
    """
    overrides = [
        *DENSE,
        "data.limit_train=308",
        "network.hidden=[20,20]",
        "network.j_d=0.0",
        "network.lambda_forward=2.0",
        "network.lambda_backward=2.0",
        "network.input_to_all=true",
        "network.w_in_strengths=[5.0,4.0]",
        "network.readout=neurons",
        "network.label_encoding=halved",
        "network.w_back_skip=[0.9]",
        "network.w_forth_skip=[1.0]",
        "learning.warmup_sweeps=2",
        "learning.free_sweeps=0",
        "learning.p_update=0.85",
        "learning.double_dynamics=true",
        "learning.double_update=true",
        "learning.margin_convention=offdiag_lambda",
        "learning.lr_out_skip=0.1",
    ]
    train(load_run_config(None, overrides), tmp_path / "one", progress=False)
    results = launch(3, tmp_path / "three", overrides)
    assert [rc for rc, _, _ in results] == [0, 0, 0], results
    assert_close_weights(tmp_path / "one", tmp_path / "three")


def test_only_rank_zero_writes_and_resume_is_exact(tmp_path: Path) -> None:
    two_epochs = [*DENSE, "train.epochs=2"]
    assert [r[0] for r in launch(2, tmp_path / "whole", two_epochs)] == [0, 0]
    # Interrupted in epoch 2 after batch 7, on every rank at the same batch.
    results = launch(2, tmp_path / "cut", two_epochs, stop=[1, 7])
    assert [json.loads(o)["status"] for _, o, _ in results] == ["interrupted"] * 2
    assert [r[0] for r in launch(2, tmp_path / "cut", two_epochs, resume=True)] == [0, 0]
    assert_close_weights(tmp_path / "whole", tmp_path / "cut", exact=True)
    # A distributed checkpoint resumes on one process too.
    results = launch(2, tmp_path / "mixed", two_epochs, stop=[1, 7])
    train(load_run_config(None, two_epochs), tmp_path / "mixed", resume=True, progress=False)
    assert_close_weights(tmp_path / "whole", tmp_path / "mixed")
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == sorted(
        p.name for p in (tmp_path / "mixed").iterdir()
    )


def test_a_killed_rank_fails_the_job_within_the_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    results = launch(2, tmp_path / "run", [*DENSE, "train.dist_timeout=15"], die=[1, 0, 3])
    elapsed = time.monotonic() - start
    (rc0, _, err0), (rc1, _, _) = results
    assert rc1 == 9 and rc0 == 2, results
    assert "lost contact" in err0 and "Traceback" not in err0
    assert elapsed < 120


def test_asynchronous_schedule_is_refused(tmp_path: Path) -> None:
    results = launch(2, tmp_path / "run", [*DENSE, "learning.schedule=asynchronous"])
    assert [rc for rc, _, _ in results] == [2, 2], results
    assert all("cannot run data-parallel" in err for _, _, err in results)
    assert not (tmp_path / "run").exists()


def test_torchrun_launches_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        torchrun_train(out, DENSE),
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert (out / "model.safetensors").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_signal_to_the_launcher_checkpoints_once(tmp_path: Path) -> None:
    """SIGTERM to torchrun (what a scheduler sends) reaches every rank.

    They agree on the batch to stop at, rank 0 saves the checkpoint, and the run resumes on
    one process.
    """
    out = tmp_path / "run"
    overrides = [*DENSE, "network.hidden=[400]", "train.epochs=1000"]
    proc = subprocess.Popen(
        torchrun_train(out, overrides),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 180
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (out / "metrics.jsonl").exists(), proc.stderr.read() if proc.poll() else "slow"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    state, _ = load_checkpoint(out / "checkpoint.safetensors")
    assert 1 <= state["epoch"] < 1000
    # torchrun SIGKILLs a worker that has not exited 30 s after its SIGTERM; seen, rarely,
    # on a heavily oversubscribed machine (see the closing note). Otherwise rank 0 reports.
    if "forcefully exiting" not in err:
        assert "interrupted at epoch" in err, err[-3000:]
        assert not list(out.glob(".*.tmp"))
    resumed = load_run_config(None, [*overrides[:-1], "train.epochs=" + str(state["epoch"] + 1)])
    summary = train(resumed, out, resume=True, progress=False)
    assert summary["status"] == "completed" and summary["epochs"] == state["epoch"] + 1
    assert not list(out.glob(".*.tmp"))  # a killed writer's temporaries are gone
