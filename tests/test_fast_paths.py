"""The fast paths compute exactly what the straightforward dense computation does.

* CSR couplings (int32 indices, sampled updates) vs the same masked matrices stored densely
  (`Network.to_format("dense")`): same spins after every sweep, same weights, 50 steps.
* `relax` (batch-minor buffers, chunks, compaction of settled samples, no host sync while a
  CUDA graph is captured) vs a plain loop on the dense matrix that sweeps every sample.
* `evaluate` (chunked input product, dynamics and readout) vs one `predict_scores` call.

Exact comparisons are portable only where no rounding can decide a spin. The relax and
evaluate tests put every weight and field on a dyadic grid (multiples of 1/64 and 1/128),
where every sum is exact in any order and layout; the training test, whose learned weights
leave the grid, checks that no field came within 1e-9 of a threshold it is compared with
(different kernels round differently by ~1e-15).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor

import darnn.dynamics as dynamics
import darnn.learning as learning
from darnn.config import LearningConfig, NetworkConfig
from darnn.couplings import DenseCoupling, SparseCoupling, excitatory_coupling, gaussian_coupling
from darnn.dynamics import relax
from darnn.learning import evaluate, learning_step, predict_scores
from darnn.network import Network, Recurrent

F64 = torch.float64


def reference_relax(
    K: Tensor, ext: Tensor, s0: Tensor, max_sweeps: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """Reference synchronous dynamics, s <- sign(ext + K s), on every sample for every sweep.

    Sweeps counts the checks at which a sample was not yet a fixed point (s_i h_i > 0 for all i).
    """
    s, trace = s0.clone(), []
    sweeps = torch.zeros(s.shape[0], dtype=torch.int64)
    for _ in range(max_sweeps):
        h = ext + s @ K.T
        sweeps += ~(s * h > 0).all(dim=1)
        s = torch.where(h >= 0, 1.0, -1.0).to(s.dtype)
        trace.append(s)
    h = ext + s @ K.T
    return s, h, sweeps, (s * h > 0).all(dim=1), trace


def dyadic_(module: torch.nn.Module) -> None:
    """Round every weight to a multiple of 1/64, in place (zeros stay zeros)."""
    for p in module.parameters():
        p.data = torch.round(p.data * 64) / 64


def chain(kind: str, n: int = 40, seed: int = 0) -> Recurrent:
    g = torch.Generator().manual_seed(seed)
    if kind == "csr":
        J = [gaussian_coupling(n, n, strength=1.0, density=0.2, generator=g, zero_diagonal=True,
                               sparse=True)]  # fmt: skip
        net = Recurrent(J, j_d=0.25).to(F64)
    else:
        J = [gaussian_coupling(n, n, strength=1.0, density=0.3, generator=g, zero_diagonal=True)
             for _ in range(2)]  # fmt: skip
        if kind == "identity":
            net = Recurrent.from_matrices([j.to_dense().double() for j in J], 0.5, 1.0, 0.75)
        else:  # weights lam / fan_in: 0.5 and 0.25
            fwd = [excitatory_coupling(n, n, lam=1.5, fan_in=3, generator=g)]
            bwd = [excitatory_coupling(n, n, lam=0.75, fan_in=3, generator=g)]
            net = Recurrent(J, 0.5, fwd, bwd).to(F64)
    dyadic_(net)
    return net


def random_ext(net: Recurrent, batch: int, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Per-sample scales: some samples settle at once, others late or never.
    scale = torch.linspace(0.0, 3.0, batch, dtype=F64).view(-1, 1)
    return [torch.round(scale * torch.randn(batch, n, generator=g, dtype=F64) * 128) / 128
            for n in net.sizes]  # fmt: skip


@pytest.mark.parametrize("kind", ["csr", "identity", "sparse-inter"])
@pytest.mark.parametrize("start", ["zero", "random"])
def test_relax_matches_plain_dense_loop(
    kind: str, start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = chain(kind)
    batch = 2 * dynamics.chunk_size(net) + 37  # several chunks, the last one partial
    ext = random_ext(net, batch, seed=1)
    g = torch.Generator().manual_seed(2)
    states = None
    if start == "random":
        states = [torch.where(torch.rand(batch, n, generator=g) < 0.5, 1.0, -1.0).to(F64)
                  for n in net.sizes]  # fmt: skip
    compactions = []
    real_take = dynamics._take
    monkeypatch.setattr(dynamics, "_take", lambda xs, k: compactions.append(1) or real_take(xs, k))
    out = relax(net, ext, states, max_sweeps=12)
    assert compactions, "the test should exercise the compaction of settled samples"

    K = net.dense_matrix()
    e = torch.cat(ext, dim=1)
    s0 = torch.zeros_like(e) if states is None else torch.cat(states, dim=1)
    s, h, sweeps, converged, trace = reference_relax(K, e, s0, 12)
    assert torch.equal(torch.cat(out.states, dim=1), s)
    assert torch.equal(out.sweeps, sweeps)
    assert torch.equal(out.converged, converged)
    assert 0 < int(converged.sum()) < batch  # a mix of settled and unsettled samples
    assert torch.equal(torch.cat(out.fields, dim=1), h)  # exact sums on the dyadic grid
    assert torch.equal(torch.cat(out.internal, dim=1), h - e)

    # trace=True: the unchunked path, states after every sweep
    traced = relax(net, ext, states, max_sweeps=12, trace=True)
    assert traced.trace is not None and len(traced.trace) == 12
    for got, want in zip(traced.trace, trace):
        assert torch.equal(torch.cat(got, dim=1), want)

    # No host sync (CUDA graph capture): every sweep runs, same outcome.
    monkeypatch.setattr(dynamics, "_capturing", lambda device: True)
    nosync = relax(net, ext, states, max_sweeps=12)
    assert torch.equal(torch.cat(nosync.states, dim=1), s)
    assert torch.equal(nosync.sweeps, sweeps) and torch.equal(nosync.converged, converged)


def test_relax_phases_share_internal_fields() -> None:
    # A second relax from the first one's states and internal fields = one longer run.
    net = chain("csr")
    ext = random_ext(net, 50, seed=3)
    a = relax(net, ext, max_sweeps=2)
    b = relax(net, ext, a.states, internal=a.internal, max_sweeps=6)
    whole = relax(net, ext, max_sweeps=8)
    assert torch.equal(b.states[0], whole.states[0])
    assert torch.equal(b.fields[0], whole.fields[0])
    none = relax(net, ext, a.states, internal=a.internal, max_sweeps=0)
    assert torch.equal(none.internal[0], a.internal[0]) and none.internal[0] is not a.internal[0]


def closest(t: Tensor, threshold: float) -> float:
    """Smallest non-zero |t - threshold|.

    An exact 0 is structural (a unit whose inputs are all zero): every kernel computes it
    exactly, so it cannot differ between them.
    """
    d = (t - threshold).abs()
    d = d[d > 0]
    return float(d.min()) if d.numel() else math.inf


def sparse_network() -> Network:
    cfg = NetworkConfig(hidden=(150,), j_d=0.6, j_density=0.1, w_in_density=0.2,
                        sparse_format="csr")  # fmt: skip
    return Network(cfg, 40, 4, seed=5, dtype=F64)


def test_csr_and_dense_paths_agree_over_training(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = sparse_network()
    dense = copy.deepcopy(fast).to_format("dense")
    assert isinstance(fast.recurrent.J[0], SparseCoupling)
    assert isinstance(fast.w_in[0], SparseCoupling)
    assert fast.recurrent.J[0].crow.dtype == torch.int32
    assert isinstance(dense.recurrent.J[0], DenseCoupling) and dense.recurrent.J[0].mask is not None
    cfg = LearningConfig(kappa_in=1.0, kappa_j=0.8, kappa_out=2.0, lr_in=0.3, lr_j=0.2,
                         lr_out=0.1, decay_in=1e-3, decay_j=1e-3, decay_out=1e-3)  # fmt: skip

    traces: list[list[list[Tensor]]] = []
    margins: list[float] = []
    real_relax = learning.relax

    def traced_relax(rec, external, states=None, **kwargs):  # type: ignore[no-untyped-def]
        out = real_relax(rec, external, states, **{**kwargs, "trace": True})
        traces.append(out.trace)
        # How close the fields that decided a spin (or an update) came to a threshold.
        K, e = rec.dense_matrix(), torch.cat(external, dim=1)
        margins.append(closest(e, 0.0) if states is None else math.inf)
        for s in [*([] if states is None else [states]), *out.trace]:
            s = torch.cat(s, dim=1)
            sh = s * (e + s @ K.T)
            margins.append(min(closest(sh, k) for k in (0.0, 0.8, 1.0)))
        return out

    monkeypatch.setattr(learning, "relax", traced_relax)
    initial = [c.to_dense() for c in (fast.w_in[0], fast.recurrent.J[0], fast.w_out)]
    g = torch.Generator().manual_seed(7)
    for step in range(50):
        x = torch.rand(16, 40, generator=g, dtype=F64) * (torch.rand(16, 40, generator=g) < 0.5)
        y = torch.randint(0, 4, (16,), generator=g)
        stats = [learning_step(net, x, y, cfg) for net in (fast, dense)]
        a, b = traces[-6:-3], traces[-3:]  # warm-up, clamped and free phase of each
        for phase_a, phase_b in zip(a, b):
            for sweep_a, sweep_b in zip(phase_a, phase_b):
                assert torch.equal(sweep_a[0], sweep_b[0]), f"step {step}"
        for k in ("correct", "converged", "free_sweeps"):
            assert torch.equal(getattr(stats[0], k), getattr(stats[1], k)), k
    # Spins equal exactly is meaningful only if rounding could not have flipped one.
    assert min(margins) > 1e-9
    pairs = [(fast.w_in[0], dense.w_in[0]), (fast.recurrent.J[0], dense.recurrent.J[0]),
             (fast.w_out, dense.w_out)]  # fmt: skip
    for (c_fast, c_dense), before in zip(pairs, initial):
        w_fast, w_dense = c_fast.to_dense(), c_dense.to_dense()
        assert not torch.allclose(w_fast, before)  # learning did happen
        torch.testing.assert_close(w_fast, w_dense, rtol=1e-5, atol=1e-9)
        assert torch.equal(c_fast.support(), c_dense.support())


@pytest.mark.parametrize("kernel", ["torch", "fused"])  # chunks relaxed either way
def test_chunked_evaluate_equals_one_batch(kernel: str) -> None:
    net = sparse_network()
    net.to(torch.float32)
    dyadic_(net)  # and pixels in multiples of 1/16: exact float32 sums in any chunking
    cfg = LearningConfig(kernel=kernel)
    g = torch.Generator().manual_seed(9)
    chunk = dynamics.chunk_size(net.recurrent, cfg.schedule, net.device)
    assert chunk is not None
    X = torch.round(torch.rand(3 * chunk + 5, 40, generator=g) * 16) / 16
    y = torch.randint(0, 4, (X.shape[0],), generator=g)
    res = evaluate(net, X, y, cfg, batch_size=X.shape[0])
    scores, out = predict_scores(net, X, cfg)
    assert torch.equal(res["scores"], scores)
    assert res["sweeps"] == pytest.approx(out.sweeps.double().mean().item())
    assert res["converged"] == pytest.approx(out.converged.double().mean().item())
    assert res["accuracy"] == pytest.approx((scores.argmax(1) == y).double().mean().item())
