"""The C update (darnn.sampled) against torch's sampled product, bit for bit.

The comparisons use arbitrary float32 values: the C code must reproduce torch's rounding
wherever `calibrate` says it can (it checks that here, on this CPU and torch), and decline
everything else.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest
import torch
from test_fused import RULE, inputs, network

from darnn import fused, sampled
from darnn.couplings import SparseCoupling
from darnn.learning import learning_step

pytestmark = pytest.mark.skipif(
    fused.library() is None, reason="no C compiler here: the fused kernel cannot be built"
)


def update_problem(seed: int, p_post: float, pre_kind: str, batch: int = 16):  # type: ignore[no-untyped-def]
    """A sparse coupling with every kind of row, and the rule's post and pre terms."""
    g = torch.Generator().manual_seed(seed)
    n_out, n_in = 67, 45
    support = torch.rand(n_out, n_in, generator=g) < 0.4
    support[5, :] = True  # rows longer than one group of 16 ...
    support[6, :] = False  # ... and an empty one
    weights = torch.randn(n_out, n_in, generator=g)
    weights[:3], weights[3] = 0.0, -0.0  # zero sums show the sign of zero here
    weights[7, ::3] = -0.0  # ... and in some blocks of a row that only decays
    coupling = SparseCoupling.from_dense(weights, support)
    active = (torch.rand(batch, n_out, generator=g) < p_post).float()
    active[:, 7:10] = 0.0  # rows that only decay
    post = active * torch.where(torch.rand(batch, n_out, generator=g) < 0.5, 1.0, -1.0)
    if pre_kind == "signs":
        pre = torch.where(torch.rand(batch, n_in, generator=g) < 0.5, 1.0, -1.0)
    else:
        pre = torch.randn(batch, n_in, generator=g) * (torch.rand(batch, n_in, generator=g) < 0.6)
        pre = pre.abs() if pre_kind == "pixels" else pre
    return coupling, post, pre


needs_calibration = pytest.mark.skipif(
    sampled.calibrate() is None,
    reason="this torch sums its sampled product in an order the fused update does not know",
)


@needs_calibration
@pytest.mark.parametrize("p_post", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("pre_kind", ["pixels", "signs", "signed"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [16, 32, 48, 64, 256])
def test_the_fused_update_has_torch_s_bits(
    p_post: float, pre_kind: str, threads: int, batch: int
) -> None:
    from darnn.threads import using_threads

    for seed in range(3):
        ours, post, pre = update_problem(seed, p_post, pre_kind, batch)
        ref, _, _ = update_problem(seed, p_post, pre_kind, batch)
        ref.add_outer_(post, pre, alpha=0.0371, decay=3.3e-5)
        with using_threads(threads):
            assert sampled.add_outer_(ours, post, pre, alpha=0.0371, decay=3.3e-5)
        assert torch.equal(ours.values.view(torch.int32), ref.values.view(torch.int32))


@needs_calibration
def test_the_fused_update_declines_what_it_does_not_cover() -> None:
    coupling, post, pre = update_problem(0, 0.5, "pixels")
    before = coupling.values.detach().clone()
    cases = {
        "a post term outside {-1, 0, 1}": (post * 0.5, pre),
        "a pre term that is not finite": (post, pre.index_fill(1, torch.tensor([3]), math.inf)),
        "a batch that is not a multiple of 16": (post[:8], pre[:8]),
        "a batch over 256": (post.repeat(17, 1), pre.repeat(17, 1)),
        "float64": (post.double(), pre.double()),
        "a shape that does not fit": (post[:, :-1], pre),
    }
    for why, (p, q) in cases.items():
        assert not sampled.add_outer_(coupling, p, q, alpha=0.1), why
        assert torch.equal(coupling.values, before), why


def test_the_update_is_calibrated_wherever_torch_sums_with_vectors() -> None:
    # ATen's AVX2 and AVX-512 kernels share the tree the C code follows; only a scalar
    # build (ATEN_CPU_CAPABILITY=default) sums in another order and keeps torch's update,
    # as does a CPU without AVX-512, where the C update is not compiled.
    lib = fused.library()
    assert lib is not None
    if lib.darnn_update_compiled() and torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        assert sampled.calibrate() is not None
    else:
        assert sampled.calibrate() is None


def test_built_without_avx512_the_library_runs_and_declines_every_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cc = tmp_path / "cc"  # the system compiler, told the CPU has no AVX-512
    cc.write_text(f'#!/bin/sh\nexec {os.environ.get("CC", "cc")} "$@" -mno-avx512f\n')
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fused.library.cache_clear()
    sampled.calibrate.cache_clear()
    try:
        lib = fused.library()
        assert lib is not None and not lib.darnn_update_compiled()
        assert sampled.calibrate() is None
        coupling, post, pre = update_problem(0, 0.5, "pixels")
        assert not sampled.add_outer_(coupling, post, pre, alpha=0.1)
        nets = {k: network("csr-1", seed=3) for k in ("torch", "fused")}
        x, y = inputs(32, seed=4)
        for kernel, net in nets.items():
            for rows in (slice(0, 16), slice(16, 32)):
                learning_step(net, x[rows], y[rows], dataclasses.replace(RULE, kernel=kernel))
        for key, value in nets["torch"].state_dict().items():
            assert torch.equal(nets["fused"].state_dict()[key], value), key
    finally:
        fused.library.cache_clear()
        sampled.calibrate.cache_clear()


@pytest.mark.parametrize("layout", ["batch-minor", "contiguous", "mixed", "readout"])
def test_post_terms_have_torch_s_bits(layout: str) -> None:
    """(s h <= kappa) * s in C: torch's values (signed zeros, NaN, infinities), layout, count."""
    from darnn.learning import at_most

    g = torch.Generator().manual_seed(7)
    s = torch.where(torch.rand(16, 300, generator=g) < 0.5, 1.0, -1.0)
    h = torch.randn(16, 300, generator=g) * 3
    h[0, :4] = torch.tensor([math.nan, math.inf, -math.inf, -0.0])
    s[1, :3] = torch.tensor([0.5, -0.0, math.nan])  # not the rule's states: still torch's bits
    if layout in ("batch-minor", "mixed"):
        s = s.T.contiguous().T
    if layout in ("batch-minor", "readout"):  # readout: the targets against the readout's field
        h = h.T.contiguous().T
    found = sampled.post_terms(s, h, 1.78)
    assert found is not None
    post, below = found
    mask = at_most(s * h, 1.78)
    ref = mask * s
    assert torch.equal(post.view(torch.int32), ref.view(torch.int32))
    assert post.stride() == ref.stride() and below == int(mask.sum())
    assert sampled.post_terms(s.double(), h.double(), 1.78) is None  # float32 only
