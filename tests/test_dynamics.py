import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from darnn.config import NetworkConfig
from darnn.dynamics import is_fixed_point, relax, spin_sign
from darnn.network import Network, Recurrent

SCHEDULES = ["synchronous", "sequential", "asynchronous"]


def chain(seed: int, sizes: tuple[int, ...], j_d: float, lam: float = 1.0) -> Recurrent:
    g = torch.Generator().manual_seed(seed)
    mats = [torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5 for n in sizes]
    return Recurrent.from_matrices(mats, j_d=j_d, lambda_forward=lam, lambda_backward=lam)


def random_ext(seed: int, batch: int, sizes: tuple[int, ...], scale: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1000)
    return [scale * torch.randn(batch, n, generator=g, dtype=torch.float64) for n in sizes]


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
        assert torch.allclose(a, b)
    stable = torch.stack([(s * f > 0).all(1) for s, f in zip(out.states, h)]).all(0)
    assert torch.equal(out.converged, stable)
    assert torch.all(out.sweeps[out.converged] <= 30)
    for s in out.states:
        assert torch.all(s.abs() == 1)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_fixed_point_is_left_unchanged(schedule: str) -> None:
    net = chain(3, (20,), j_d=3.0)  # J_D large: every state with |ext| small is stable
    s0 = [spin_sign(torch.randn(4, 20, dtype=torch.float64))]
    out = relax(net, [torch.zeros(4, 20, dtype=torch.float64)], s0, max_sweeps=5, schedule=schedule)
    assert torch.equal(out.states[0], s0[0])
    assert out.converged.all() and torch.all(out.sweeps == 0)


def test_strong_self_coupling_converges_zero_does_not() -> None:
    ext = random_ext(0, 64, (200,), 0.0)
    s0 = [spin_sign(torch.randn(64, 200, dtype=torch.float64))]
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
