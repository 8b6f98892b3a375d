import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from darnn.config import NetworkConfig
from darnn.couplings import IdentityCoupling, SparseCoupling, convert, gaussian_coupling
from darnn.dynamics import chunk_size, is_fixed_point, make_sweep, relax, spin_sign
from darnn.network import Network, Recurrent

SCHEDULES = ["synchronous", "sequential", "asynchronous"]
F64 = torch.float64

# Couplings and external fields lie on a dyadic grid (multiples of 1/64 and 1/128): every
# field is then a sum computed exactly, in any order and layout, on any CPU and BLAS, so
# states from different computations may be compared exactly (and a tie, if one occurs,
# is an exact 0 everywhere and goes to +1 everywhere).


def dyadic(t: Tensor, grid: int = 64) -> Tensor:
    return torch.round(t * grid) / grid


def chain(seed: int, sizes: tuple[int, ...], j_d: float, lam: float = 1.0) -> Recurrent:
    g = torch.Generator().manual_seed(seed)
    mats = [dyadic(torch.randn(n, n, generator=g, dtype=F64) / n**0.5) for n in sizes]
    return Recurrent.from_matrices(
        mats, j_d=float(dyadic(torch.tensor(j_d))), lambda_forward=lam, lambda_backward=lam
    )


def random_ext(seed: int, batch: int, sizes: tuple[int, ...], scale: float) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed + 1000)
    return [dyadic(scale * torch.randn(batch, n, generator=g, dtype=F64), 128) for n in sizes]


def random_states(seed: int, batch: int, sizes: tuple[int, ...]) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed + 2000)
    return [spin_sign(torch.randn(batch, n, generator=g, dtype=F64)) for n in sizes]


def sparse_chain(seed: int, n: int = 60, density: float = 0.1) -> Recurrent:
    """Two CSR modules with dyadic weights and lambda*I between them."""
    g = torch.Generator().manual_seed(seed)
    J = [
        gaussian_coupling(n, n, strength=1.0, density=density, generator=g, zero_diagonal=True,
                          sparse=True)
        for _ in range(2)
    ]  # fmt: skip
    for c in J:
        c.values.data = dyadic(c.values.data)
    lam = [IdentityCoupling(torch.full((n,), x)) for x in (1.0, 0.75)]
    return Recurrent(J, 0.5, lam[:1], lam[1:]).to(F64)


def test_spin_sign_ties_go_up() -> None:
    assert spin_sign(torch.tensor([-1.0, 0.0, 2.0])).tolist() == [-1.0, 1.0, 1.0]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_layers=st.integers(1, 2),
    n=st.integers(2, 30),
    j_d=st.floats(0.0, 2.0),
    schedule=st.sampled_from(SCHEDULES),
)
def test_converged_states_are_fixed_points(
    seed: int, n_layers: int, n: int, j_d: float, schedule: str
) -> None:
    sizes = (n,) * n_layers
    net = chain(seed, sizes, j_d)
    ext = random_ext(seed, 6, sizes, 0.5)
    out = relax(
        net, ext, max_sweeps=30, schedule=schedule, generator=torch.Generator().manual_seed(seed)
    )
    h = [e + i for e, i in zip(ext, net.internal_fields(out.states))]
    for a, b in zip(h, out.fields):
        assert torch.equal(a, b)  # exact on the dyadic grid
    stable = torch.stack([(s * f > 0).all(1) for s, f in zip(out.states, h)]).all(0)
    assert torch.equal(out.converged, stable)
    assert torch.all(out.sweeps[out.converged] <= 30)
    for s in out.states:
        assert torch.all(s.abs() == 1)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_fixed_point_is_left_unchanged(schedule: str) -> None:
    net = chain(3, (20,), j_d=3.0)  # J_D large: every state with |ext| small is stable
    s0 = random_states(3, 4, (20,))
    out = relax(net, [torch.zeros(4, 20, dtype=torch.float64)], s0, max_sweeps=5, schedule=schedule)
    assert torch.equal(out.states[0], s0[0])
    assert out.converged.all() and torch.all(out.sweeps == 0)


def test_strong_self_coupling_converges_zero_does_not() -> None:
    ext = random_ext(0, 64, (200,), 0.0)
    s0 = random_states(0, 64, (200,))
    high = relax(chain(0, (200,), j_d=1.5), ext, s0, max_sweeps=50)
    low = relax(chain(0, (200,), j_d=0.0), ext, s0, max_sweeps=50)
    assert high.converged.float().mean() > 0.9
    assert low.converged.float().mean() < 0.1


def test_single_module_sequential_equals_synchronous() -> None:
    net = chain(5, (25,), j_d=0.4)
    ext = random_ext(5, 8, (25,), 1.0)
    a = relax(net, ext, max_sweeps=7, schedule="synchronous", trace=True)
    b = relax(net, ext, max_sweeps=7, schedule="sequential", trace=True)
    assert torch.equal(a.states[0], b.states[0])
    assert a.trace is not None and len(a.trace) == 7


def test_sequential_uses_updated_lower_layer() -> None:
    # Two modules, no recurrence inside, strong forward coupling: after ONE sequential
    # sweep from zero the top module already follows the bottom one; synchronously it
    # only sees the old (zero) bottom state.
    mats = [torch.zeros(3, 3, dtype=torch.float64)] * 2
    net = Recurrent.from_matrices(mats, j_d=0.0, lambda_forward=5.0, lambda_backward=0.0)
    ext = [
        torch.tensor([[1.0, -1.0, 1.0]], dtype=torch.float64),
        torch.tensor([[-0.1, -0.1, -0.1]], dtype=torch.float64),
    ]
    seq = relax(net, ext, max_sweeps=1, schedule="sequential")
    syn = relax(net, ext, max_sweeps=1, schedule="synchronous")
    assert seq.states[1].tolist() == [[1.0, -1.0, 1.0]]
    assert syn.states[1].tolist() == [[-1.0, -1.0, -1.0]]


def test_asynchronous_is_reproducible_and_seed_dependent() -> None:
    net = chain(1, (40,), j_d=0.3)
    ext = random_ext(1, 10, (40,), 0.2)
    s0 = [
        spin_sign(
            torch.randn(10, 40, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        )
    ]
    runs = [
        relax(
            net,
            ext,
            s0,
            max_sweeps=3,
            schedule="asynchronous",
            generator=torch.Generator().manual_seed(k),
        )
        for k in (1, 1, 2)
    ]
    assert torch.equal(runs[0].states[0], runs[1].states[0])
    assert not torch.equal(runs[0].states[0], runs[2].states[0])


def test_converged_samples_skip_no_change_in_result() -> None:
    # Splitting the batch must not change anything: samples are independent.
    net = chain(2, (30,), j_d=0.6)
    ext = random_ext(2, 16, (30,), 1.0)
    whole = relax(net, ext, max_sweeps=10)
    parts = [relax(net, [e[i : i + 1] for e in ext], max_sweeps=10) for i in range(16)]
    assert torch.equal(whole.states[0], torch.cat([p.states[0] for p in parts]))
    assert torch.equal(whole.sweeps, torch.cat([p.sweeps for p in parts]))


def test_bad_arguments() -> None:
    net = chain(0, (5,), j_d=0.5)
    ext = [torch.zeros(2, 5, dtype=torch.float64)]
    with pytest.raises(ValueError, match="synchronous, sequential, asynchronous"):
        relax(net, ext, max_sweeps=1, schedule="parallel")
    with pytest.raises(ValueError, match=r"shape \(2, 5\)"):
        relax(net, [torch.zeros(2, 4, dtype=torch.float64)], max_sweeps=1)
    with pytest.raises(ValueError, match="max_sweeps"):
        relax(net, ext, max_sweeps=-1)


def test_network_dynamics_in_float32() -> None:
    net = Network(NetworkConfig(hidden=(50, 50)), 6, 3, seed=0)
    x = torch.rand(5, 6)
    out = relax(net.recurrent, net.input_drives(x), max_sweeps=4)
    assert out.states[0].dtype == torch.float32
    assert torch.equal(out.converged, is_fixed_point(out.states, out.fields))


def sequential_reference(
    net: Recurrent, ext: list[Tensor], s0: list[Tensor], max_sweeps: int
) -> tuple[list[list[Tensor]], Tensor]:
    """Reference layer-sequential dynamics, module after module.

    Each module from the states the modules below have just reached, on every sample for
    every sweep; sweeps counts the sweeps a sample started off a fixed point.
    """
    K, off = net.dense_matrix(), [0, *torch.tensor(net.sizes).cumsum(0).tolist()]
    s, trace = [t.clone() for t in s0], []
    sweeps = torch.zeros(s[0].shape[0], dtype=torch.int64)
    for _ in range(max_sweeps):
        h = torch.cat(ext, 1) + torch.cat(s, 1) @ K.T
        sweeps += ~(torch.cat(s, 1) * h > 0).all(1)
        for l in range(net.n_layers):
            h_l = ext[l] + torch.cat(s, 1) @ K[off[l] : off[l + 1]].T
            s[l] = torch.where(h_l >= 0, 1.0, -1.0).to(F64)
        trace.append([t.clone() for t in s])
    return trace, sweeps


@pytest.mark.parametrize("start", ["zero", "random"])
def test_sequential_matches_plain_loop(start: str) -> None:
    net = sparse_chain(4)
    ext = random_ext(4, 40, net.sizes, 0.6)
    s0 = random_states(4, 40, net.sizes) if start == "random" else None
    out = relax(net, ext, s0, max_sweeps=8, schedule="sequential", trace=True)
    zero = [torch.zeros_like(e) for e in ext]
    trace, sweeps = sequential_reference(net, ext, zero if s0 is None else s0, 8)
    assert out.trace is not None
    for got, want in zip(out.trace, trace):
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    assert torch.equal(out.sweeps, sweeps)
    assert 0 < int(out.converged.sum()) < 40  # a mix of settled and unsettled samples


def layouts(ts: list[Tensor], layout: str) -> list[Tensor]:
    """Copies in the row-major or in the batch-minor layout (the one relax returns)."""
    return [t.contiguous() if layout == "row-major" else t.T.contiguous().T for t in ts]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("layout", ["row-major", "batch-minor"])
@pytest.mark.parametrize("batch", [6, 300])  # 300: several chunks (CSR chunks are smaller)
@pytest.mark.parametrize("max_sweeps", [0, 4])
def test_relax_never_modifies_its_inputs(
    schedule: str, layout: str, batch: int, max_sweeps: int
) -> None:
    net = sparse_chain(1)
    assert batch <= 6 or batch > (chunk_size(net) or batch)
    ext = layouts(random_ext(1, batch, net.sizes, 0.5), layout)
    states = layouts(random_states(1, batch, net.sizes), layout)
    internal = layouts([dyadic(torch.randn_like(e)) for e in ext], layout)
    given = [t.clone() for t in (*ext, *states, *internal)]
    for kw in ({}, {"internal": internal}):
        out = relax(net, ext, states, max_sweeps=max_sweeps, schedule=schedule, **kw)
        for a, b in zip((*ext, *states, *internal), given):
            assert torch.equal(a, b)
        if max_sweeps == 0:
            assert all(torch.equal(a, b) for a, b in zip(out.states, states))
            out.states[0].neg_()  # the result is a copy: writing to it leaves the input alone
            assert torch.equal(states[0], given[len(ext)])


def test_phases_keep_their_states() -> None:
    # The clamped phase of training starts from the warm-up's states, which relax returns
    # in the batch-minor layout: they must survive the next call unchanged.
    net = sparse_chain(2)
    ext = random_ext(2, 8, net.sizes, 0.5)
    warm = relax(net, ext, max_sweeps=1)
    kept = [s.clone() for s in warm.states]
    clamped = relax(net, [e + 3.0 for e in ext], warm.states, internal=warm.internal, max_sweeps=5)
    assert all(torch.equal(a, b) for a, b in zip(warm.states, kept))
    assert not all(torch.equal(a, b) for a, b in zip(clamped.states, kept))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_uses_the_given_internal_fields(schedule: str) -> None:
    # Internal fields that make every unit look stable (s_i h_i >= 10): relax must take them
    # as given (consecutive phases share them), so no sweep runs; recomputed from the
    # states they would show most samples unsettled.
    net = chain(6, (30, 30), j_d=0.0)
    ext = random_ext(6, 12, net.sizes, 0.1)
    s0 = random_states(6, 12, net.sizes)
    assert not relax(net, ext, s0, max_sweeps=0, schedule=schedule).converged.all()
    looks_stable = [10.0 * s for s in s0]
    out = relax(net, ext, s0, internal=looks_stable, max_sweeps=5, schedule=schedule)
    assert torch.all(out.sweeps == 0) and out.converged.all()
    assert all(torch.equal(a, b) for a, b in zip(out.states, s0))
    for f, e, i in zip(out.fields, ext, looks_stable):
        assert torch.equal(f, e + i)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_split_run_equals_one_run(schedule: str) -> None:
    # 2 sweeps, then 6 more from the states and internal fields reached = 8 sweeps at once
    # (the asynchronous schedule's generator simply continues its stream).
    net = sparse_chain(7)
    ext = random_ext(7, 20, net.sizes, 0.5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = relax(net, ext, max_sweeps=2, schedule=schedule, generator=g1)
    b = relax(
        net, ext, a.states, internal=a.internal, max_sweeps=6, schedule=schedule, generator=g1
    )
    whole = relax(net, ext, max_sweeps=8, schedule=schedule, generator=g2)
    for x, y in zip((*b.states, *b.fields), (*whole.states, *whole.fields)):
        assert torch.equal(x, y)
    assert torch.equal(b.converged, whole.converged)
    assert torch.equal(a.sweeps + b.sweeps, whole.sweeps)


def test_asynchronous_keeps_sparse_couplings_sparse(monkeypatch: pytest.MonkeyPatch) -> None:
    # The asynchronous loop reads a CSR chain through the couplings' own rows (memory in
    # proportion to the non-zeros) and gives the states the same chain stored densely gives.
    net = sparse_chain(8, n=200, density=0.02)
    dense = copy.deepcopy(net)
    dense.J = torch.nn.ModuleList(convert(c, "dense") for c in net.J)
    assert isinstance(net.J[0], SparseCoupling) and not isinstance(dense.J[0], SparseCoupling)
    ext = random_ext(8, 16, net.sizes, 0.3)
    s0 = random_states(8, 16, net.sizes)
    want = relax(dense, ext, s0, max_sweeps=6, schedule="asynchronous",
                 generator=torch.Generator().manual_seed(1))  # fmt: skip

    def no_dense(self: Recurrent) -> Tensor:
        raise AssertionError("the asynchronous schedule densified a sparse chain")

    monkeypatch.setattr(Recurrent, "dense_matrix", no_dense)
    got = relax(net, ext, s0, max_sweeps=6, schedule="asynchronous",
                generator=torch.Generator().manual_seed(1))  # fmt: skip
    for a, b in zip((*got.states, *got.fields), (*want.states, *want.fields)):
        assert torch.equal(a, b)
    assert torch.equal(got.sweeps, want.sweeps) and got.converged.any()


def test_a_sweep_keeps_fields_in_step_with_states() -> None:
    # The contract of a schedule's sweep: fields in, fields at the new states out.
    net = sparse_chain(9)
    ext = random_ext(9, 5, net.sizes, 0.5)
    for schedule in SCHEDULES:
        s = random_states(9, 5, net.sizes)
        h = [torch.empty_like(e) for e in ext]
        net.total_fields_(s, ext, h)
        before = [t.clone() for t in s]
        make_sweep(net, schedule, torch.Generator().manual_seed(0))(s, ext, h, None)
        assert not all(torch.equal(a, b) for a, b in zip(s, before)), schedule
        for got, e, i in zip(h, ext, net.internal_fields(s)):
            assert torch.equal(got, e + i), schedule


def test_chunking_is_decided_in_one_place() -> None:
    sparse, dense = sparse_chain(0), chain(0, (10,), j_d=0.5)
    assert chunk_size(sparse) == 128 and chunk_size(dense) == 4096
    assert chunk_size(sparse, "asynchronous") is None  # its random orders span the batch
    assert chunk_size(sparse, "synchronous", torch.device("meta")) is None  # not on the CPU
