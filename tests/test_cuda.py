"""The CUDA path against the CPU: the same weights from the same config and seed.

Every test here needs a CUDA device and is skipped without one; benchmarks/gpu_check.sh
runs this file first on a GPU machine. float64 keeps every comparison far from rounding.
"""

from __future__ import annotations

import pytest
import torch

from darnn import LearningConfig, Network, NetworkConfig, learning_step
from darnn.learning import evaluate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CASES = {
    "dense": (NetworkConfig(hidden=(64,), j_density=1.0), LearningConfig()),
    "csr": (NetworkConfig(hidden=(64,), j_density=0.1, sparse_format="csr"), LearningConfig()),
    "chain": (
        NetworkConfig(hidden=(32, 32), j_d=0.0, lambda_forward=2.0, lambda_backward=2.0),
        LearningConfig(schedule="sequential"),
    ),
    "protocol": (
        NetworkConfig(
            hidden=(32, 32), readout="neurons", label_encoding="halved", input_to_all=True,
            w_back_skip=(0.9,), w_forth_skip=(1.0,),
        ),
        LearningConfig(
            warmup_sweeps=2, free_sweeps=0, p_update=0.85, double_dynamics=True,
            lr_out_skip=0.1,
        ),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_cuda_training_equals_cpu(case: str) -> None:
    net_cfg, cfg = CASES[case]
    x = torch.rand(64, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(64) % 5
    nets = {
        device: Network(net_cfg, 20, 5, seed=3, device=device, dtype=torch.float64)
        for device in ("cpu", "cuda")
    }
    for device, net in nets.items():
        gen = torch.Generator().manual_seed(7)  # CPU stream: the same masks on both devices
        for batch in range(4):
            rows = slice(16 * batch, 16 * (batch + 1))
            learning_step(net, x[rows].to(device), y[rows].to(device), cfg, gen)
    cpu, gpu = nets["cpu"].state_dict(), nets["cuda"].state_dict()
    for name, value in cpu.items():
        torch.testing.assert_close(gpu[name].cpu(), value, rtol=1e-9, atol=1e-12, msg=name)
    scores = [evaluate(n, x, y, cfg)["scores"].cpu() for n in nets.values()]
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-9, atol=1e-12)
