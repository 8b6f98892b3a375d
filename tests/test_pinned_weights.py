"""Bit-for-bit reproducibility across refactorings: tiny runs whose weights are pinned.

The same config and seed must give the same weights, bit for bit, whatever the code's
structure. Each case below trains a tiny network and hashes every tensor it learned. Float
rounding depends on the CPU's kernels (vector width, BLAS build, library versions), so a hash
is only compared on the platform it was recorded on: the table is keyed by a fingerprint of
everything that can change the rounding, and another platform skips (never fails) until its
row is added with ``python tests/test_pinned_weights.py``.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sklearn
import torch

from darnn import DARNClassifier
from darnn.modelfiles import load_model
from darnn.runconfig import load_run_config
from darnn.training import train

DENSE = [
    "data.name=digits",
    "network.hidden=[48]",
    "network.j_density=1.0",
    "network.w_in_density=1.0",
    "train.epochs=2",
    "train.batch_size=32",
    "train.threads=1",
    "train.probe_size=64",
    "learning.kernel=torch",  # the pins were recorded on the torch path (test_fused: the other)
]
SPARSE_ASYNC = [
    "data.name=digits",
    "data.limit_train=300",
    "network.hidden=[40,40]",
    "network.j_density=0.2",
    "network.w_in_density=0.5",
    "network.sparse_format=csr",
    "network.inter=sparse",
    "network.inter_fan_in=3",
    "learning.schedule=asynchronous",
    "learning.readout_state=eval",
    "train.epochs=1",
    "train.batch_size=16",
    "train.threads=1",
    "train.probe_size=32",
    "learning.kernel=torch",
]


def weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def trained_by_cli(overrides: list[str], out: Path) -> str:
    summary = train(load_run_config(None, overrides), out, progress=False)
    assert summary["status"] == "completed"
    return weights_digest(load_model(out / "model"))


def trained_by_estimator(out: Path) -> str:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    clf = DARNClassifier(
        hidden=(32,),
        j_density=1.0,
        w_in_density=1.0,
        w_back_strength=1.3,
        n_epochs=2,
        batch_size=16,
        random_state=3,
        n_threads=1,
        schedule="sequential",
        kernel="torch",
    )
    clf.fit(X[:400] / 16.0, y[:400])
    return weights_digest(clf.network_)


def fields_of_one_batch(out: Path) -> str:
    """The fields the dynamics read: input drives, label field, one clamped phase.

    A rounding change in them (e.g. an operation fused differently) can leave a tiny
    training run's weights unchanged, as long as no spin flips; these bits show it.
    """
    from darnn import Network, NetworkConfig
    from darnn.dynamics import relax

    del out
    g = torch.Generator().manual_seed(5)
    config = NetworkConfig(hidden=(96,), j_density=0.1, w_in_density=0.3, label_encoding="rescaled")
    net = Network(config, 50, 10, seed=1)
    x, y = torch.rand(16, 50, generator=g), torch.randint(0, 10, (16,), generator=g)
    drives, label = net.input_drives(x), net.label_field(y)
    clamped = relax(net.recurrent, [drives[0] + label], max_sweeps=3, kernel="torch")
    digest = hashlib.sha256()
    for t in (drives[0], label, clamped.fields[0], clamped.states[0]):
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


CASES: dict[str, Callable[[Path], str]] = {
    "dense_cli": lambda out: trained_by_cli(DENSE, out / "dense"),
    "sparse_async_cli": lambda out: trained_by_cli(SPARSE_ASYNC, out / "sparse"),
    "estimator": trained_by_estimator,
    "fields": fields_of_one_batch,
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fingerprint() -> str:
    """Everything that can change float rounding: CPU, its vector unit, library versions."""
    return " | ".join(
        (
            platform.machine(),
            cpu_model(),
            torch.backends.cpu.get_cpu_capability(),
            f"torch {torch.__version__}",
            f"numpy {np.__version__}",
            f"sklearn {sklearn.__version__}",
        )
    )


# Recorded on the code before the structure pass of issue 18 (commit d4c037c).
PINNED: dict[str, dict[str, str]] = {
    "x86_64 | Intel(R) Xeon(R) Processor | AVX512 | torch 2.13.0+cpu | "
    "numpy 2.4.6 | sklearn 1.9.1": {
        "dense_cli": "0361f4216d30d3463fe3b3f6d5250bb3fc1c3f8a908c4af2ce5bd09c96ad624e",
        "estimator": "ed2d1db01574ec78593b3c45b036722b7d3e675e4480feaef8d777f2cb784584",
        "sparse_async_cli": "0e34e277d3a112707da326eebf4b2355a60f3569685692a1a22b0f6727054c78",
    },
    # Recorded at the fused kernel's introduction (issue 19), on the torch path.
    "x86_64 | AMD EPYC | AVX512 | torch 2.13.0+cpu | numpy 2.4.6 | sklearn 1.9.1": {
        "dense_cli": "bfab8b71871dd02a8a3f1c134378a6df215f2ac2e0d146415605e255c0108251",
        "estimator": "ef394725ad79c596f8bd79cc08bc06c22ffcafbcc8f45bee899fc43c01ca60a7",
        "sparse_async_cli": "0e34e277d3a112707da326eebf4b2355a60f3569685692a1a22b0f6727054c78",
        # Recorded with the second structure pass (issue 18); equal on 7f22edb, before it.
        "fields": "ce75a26164f6b91b86fe17104c58c2d18b30a744ae0fa6c0e53826b5f1e6d213",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_weights_are_bitwise_pinned(case: str, tmp_path: Path) -> None:
    recorded = PINNED.get(fingerprint(), {})
    if case not in recorded:
        pytest.skip(f"no pinned {case} for this platform ({fingerprint()})")
    assert CASES[case](tmp_path) == recorded[case]


if __name__ == "__main__":  # prints this platform's row for PINNED
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        row = {case: make(Path(tmp)) for case, make in sorted(CASES.items())}
    print(f"    {fingerprint()!r}: {row!r},", file=sys.stdout)
