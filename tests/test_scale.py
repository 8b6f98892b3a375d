"""No dense N x N on the way of a sparse network (issue 17, part 2).

The whole `darnn train` command (epoch, diagnostics, evaluation, checkpoint, model, plots)
runs with CSR couplings under an address-space cap that leaves less room than one dense
N x N matrix, and the densifications that exist on purpose are checked before they allocate.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from darnn import Network, NetworkConfig
from darnn.couplings import DenseCoupling, IdentityCoupling, convert, gaussian_coupling
from darnn.diagnostics import coupling_symmetry
from darnn.memory import NetworkTooLargeError
from darnn.theory.common import random_coupling

N = 30_000  # a dense float32 N x N is 3.35 GiB: more than the headroom below
HEADROOM = int(2.5 * 2**30)  # address space the command may add to what its imports map


def imports_address_space(env: dict[str, str]) -> int:
    """Peak virtual memory (bytes) of a process that imported what `darnn train` imports.

    A CUDA build of torch maps far more than the CPU one: the cap is set on top of it.
    """
    code = (
        "import darnn.cli, darnn.training, matplotlib.pyplot\n"
        "print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip()) * 1024


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS semantics are Linux's")
def test_whole_train_command_of_a_large_sparse_network_fits_under_a_memory_cap(
    tmp_path: Path,
) -> None:
    assert N * N * 4 > HEADROOM
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "DARNN_DATA"}
    env["OMP_NUM_THREADS"] = "1"
    limit = imports_address_space(env) + HEADROOM

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = ["train", "data.name=digits", "data.limit_train=100", f"network.hidden=[{N}]"]
    command += ["network.j_density=0.0003", "network.w_in_density=0.05", "train.epochs=1"]
    command += ["train.probe_size=64", "--out", str(out), "--quiet"]
    result = subprocess.run(
        [sys.executable, "-m", "darnn", *command],
        preexec_fn=cap,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout
    for name in ("model.safetensors", "checkpoint.safetensors", "learning_curves.png"):
        assert (out / name).is_file(), name
    assert (out / "field_histograms.png").is_file()
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert abs(record["symmetry"][0]) < 0.05  # i.i.d. sparse J: about 0


@pytest.mark.parametrize("density", [0.05, 0.3, 1.0])
def test_sparse_symmetry_equals_the_dense_measure(density: float) -> None:
    gen = torch.Generator().manual_seed(1)
    c = gaussian_coupling(200, 200, strength=1.0, density=density, generator=gen)
    dense = c.to_dense()
    sym = DenseCoupling(dense + dense.T, (dense + dense.T) != 0)
    anti = DenseCoupling(dense - dense.T, (dense - dense.T) != 0)
    for coupling in (c, sym, anti):
        expected = coupling_symmetry(coupling.to_dense())
        assert coupling_symmetry(convert(coupling, "csr")) == pytest.approx(expected, abs=1e-9)
        assert coupling_symmetry(convert(coupling, "dense")) == pytest.approx(expected, abs=1e-9)
    assert coupling_symmetry(convert(sym, "csr")) == pytest.approx(1.0)
    assert coupling_symmetry(convert(anti, "csr")) == pytest.approx(-1.0)
    assert coupling_symmetry(IdentityCoupling(torch.ones(5))) == pytest.approx(1.0)


def test_dense_matrix_is_checked_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Network(NetworkConfig(hidden=(300,), j_density=0.01), 10, 3, seed=0)
    assert net.recurrent.dense_matrix().shape == (300, 300)
    monkeypatch.setattr("darnn.network.available_memory", lambda: 1000)
    with pytest.raises(NetworkTooLargeError, match=r"dense 300 x 300 .* only"):
        net.recurrent.dense_matrix()


def test_theory_coupling_is_checked_before_allocating() -> None:
    with pytest.raises(ValueError, match="dense 10000000 x 10000000 coupling needs"):
        random_coupling(10_000_000, torch.Generator())
