import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import darnn.learning as learning
from darnn.config import LearningConfig, NetworkConfig
from darnn.learning import learning_step, local_rule, predict_scores
from darnn.network import Network


def tiny_network() -> Network:
    """D=2, N=2, C=2 with hand-set weights."""
    net = Network(NetworkConfig(hidden=(2,), j_d=0.2), 2, 2, seed=0, dtype=torch.float64)
    net.w_in[0].weight.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    net.recurrent.J[0].weight.data.copy_(torch.tensor([[0.0, 0.5], [-0.5, 0.0]]))
    net.w_out.weight.data.copy_(torch.tensor([[1.0, 0.5], [0.2, -1.0]]))
    return net


def golden_config(**kw: object) -> LearningConfig:
    base = dict(
        kappa_in=1.0,
        kappa_j=1.0,
        kappa_out=1.0,
        lr_in=0.5,
        lr_j=0.4,
        lr_out=0.3,
        decay_j=0.1,
        margin_convention="total",
    )
    return LearningConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_rule_golden_values_total_convention() -> None:
    net = tiny_network()
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    s = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    h = torch.tensor([[0.3, -2.0]], dtype=torch.float64)  # s*h = [0.3, 2.0]: unit 0 unstable
    local_rule(net, x, torch.tensor([1]), [s], [h], golden_config())
    a_in, a_j, a_out = 0.5 / math.sqrt(2), 0.4 / math.sqrt(2), 0.3 / math.sqrt(2)
    assert torch.allclose(
        net.w_in[0].weight, torch.tensor([[1 + a_in, -a_in], [0.0, 1.0]], dtype=torch.float64)
    )
    # diagonal untouched, J[0,1] += a_j * s_0 * s_1, then decay 0.1
    assert torch.allclose(
        net.recurrent.J[0].weight,
        torch.tensor([[0.0, (0.5 - a_j) * 0.9], [-0.45, 0.0]], dtype=torch.float64),
    )
    # h_out = [0.5, 1.2], t = [-1, +1]: class 0 violates its margin, class 1 does not
    assert torch.allclose(
        net.w_out.weight, torch.tensor([[1 - a_out, 0.5 + a_out], [0.2, -1.0]], dtype=torch.float64)
    )


def test_rule_offdiag_convention_adds_self_coupling() -> None:
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    s = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    h = torch.tensor([[0.3, -1.1]], dtype=torch.float64)  # s*h = [0.3, 1.1]
    total, offdiag = tiny_network(), tiny_network()
    local_rule(total, x, torch.tensor([1]), [s], [h], golden_config())
    local_rule(offdiag, x, torch.tensor([1]), [s], [h], golden_config(margin_convention="offdiag"))
    # kappa=1.0: unit 1 is stable in "total" (1.1 > 1.0) but not in "offdiag" (1.1 <= 1.2)
    assert total.w_in[0].weight[1].tolist() == [0.0, 1.0]
    a_in = 0.5 / math.sqrt(2)
    assert torch.allclose(
        offdiag.w_in[0].weight[1], torch.tensor([-a_in, 1 + a_in], dtype=torch.float64)
    )  # s_1 = -1


def small_net(seed: int, density: float = 0.5, fmt: str = "auto") -> Network:
    cfg = NetworkConfig(hidden=(12, 12), j_density=density, w_in_density=density, sparse_format=fmt)
    return Network(cfg, 5, 3, seed=seed, dtype=torch.float64)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), fmt=st.sampled_from(["dense", "csr"]))
def test_no_update_when_every_margin_holds(seed: int, fmt: str) -> None:
    net = small_net(seed, fmt=fmt)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (4,), generator=g)
    states = [
        torch.where(torch.rand(4, 12, generator=g) < 0.5, 1.0, -1.0).double() for _ in range(2)
    ]
    fields = [s * 10.0 for s in states]  # s*h = 10 > every kappa
    cfg = LearningConfig(kappa_out=-1.0, learn_inter=True, lr_inter=0.1)  # t*h_out > -1 needed
    net.w_out.weight.data.mul_(1e-3)  # |h_out| < 1: every readout margin holds
    before["w_out.weight"] = net.w_out.weight.detach().clone()
    local_rule(net, x, y, states, fields, cfg)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 1000),
    fmt=st.sampled_from(["dense", "csr"]),
    density=st.sampled_from([0.3, 1.0]),
)
def test_diagonal_and_masked_entries_never_change(seed: int, fmt: str, density: float) -> None:
    net = small_net(seed, density, fmt)
    supports = [c.support() for c in (*net.recurrent.J, *net.w_in)]
    before = [c.to_dense() for c in (*net.recurrent.J, *net.w_in)]
    g = torch.Generator().manual_seed(seed)
    # Margins no state can meet: every unit is unstable, so every stored entry must move
    # (with default margins a tiny sparse W_in can legitimately sit out a few steps).
    cfg = LearningConfig(lr_in=1.0, lr_j=1.0, decay_j=0.01, kappa_in=100.0, kappa_j=100.0)
    for _ in range(3):
        x = torch.rand(8, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (8,), generator=g)
        learning_step(net, x, y, cfg)
    after = [c.to_dense() for c in (*net.recurrent.J, *net.w_in)]
    for sup, a, b in zip(supports, before, after):
        assert torch.all(a[~sup] == 0) and torch.all(b[~sup] == 0)
        assert not torch.equal(a[sup], b[sup])  # learning did happen on the support
    for J in net.recurrent.J:
        assert torch.all(J.to_dense().diagonal() == 0)
    assert float(net.recurrent.j_d) == 0.95


def test_free_phase_and_prediction_never_read_the_label(monkeypatch: pytest.MonkeyPatch) -> None:
    net = small_net(0)
    calls: list[list[torch.Tensor]] = []
    real_relax = learning.relax

    def spy(rec, external, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append([e.clone() for e in external])
        return real_relax(rec, external, *args, **kwargs)

    monkeypatch.setattr(learning, "relax", spy)
    x = torch.rand(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    # The library may compute W_in x from another memory layout of x than this test does:
    # the drives then agree to rounding only (BLAS sums in a layout-dependent order).
    drives = net.input_drives(x)
    label = net.label_field(y)
    assert float(label.abs().min()) > 1e-3  # so "label added" is far from "no label"
    learning_step(net, x, y, LearningConfig())
    warm, clamped, free = calls
    for phase in (warm, free):
        for got, want in zip(phase, drives):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(clamped[0], drives[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(clamped[-1], drives[-1] + label, rtol=1e-12, atol=1e-12)
    calls.clear()
    drives = net.input_drives(x)  # W_in has learned
    predict_scores(net, x, LearningConfig())
    assert len(calls) == 1
    for got, want in zip(calls[0], drives):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_three_phases_report_their_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    net = small_net(2)
    sweeps: list[torch.Tensor] = []
    real_relax = learning.relax

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real_relax(*args, **kwargs)
        sweeps.append(out.sweeps)
        return out

    monkeypatch.setattr(learning, "relax", spy)
    cfg = LearningConfig(warmup_sweeps=1, clamped_sweeps=4, free_sweeps=3)
    x = torch.rand(9, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, phases = learning.three_phases(net, x, torch.arange(9) % 3, cfg)
    counts = torch.stack([p.sweeps for p in phases])
    assert counts.shape == (3, 9) and torch.equal(counts, torch.stack(sweeps))
    assert torch.all(counts[0] == 1)  # from s = 0 the warm-up sweep always runs
    assert torch.all(counts.max(dim=1).values <= torch.tensor([1, 4, 3]))
    stats = learning_step(net, x, torch.arange(9) % 3, cfg)
    assert int(stats.free_sweeps) == int(counts[2].sum())


def train_steps(seed: int, steps: int = 5) -> dict[str, torch.Tensor]:
    net = small_net(seed)
    g = torch.Generator().manual_seed(123)
    for _ in range(steps):
        x = torch.rand(6, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (6,), generator=g)
        learning_step(net, x, y, LearningConfig(schedule="asynchronous"), generator=g)
    return net.state_dict()


def test_same_seed_identical_weights() -> None:
    a, b, c = train_steps(4), train_steps(4), train_steps(5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_step_stats_are_consistent() -> None:
    net = small_net(1)
    x = torch.rand(10, 5, dtype=torch.float64)
    stats = learning_step(net, x, torch.arange(10) % 3, LearningConfig())
    assert stats.batch_size == 10
    assert 0 <= int(stats.correct) <= 10 and 0 <= int(stats.converged) <= 10
    assert 0.0 <= float(stats.unstable) <= 1.0


def test_learning_config_fields_documented_in_estimator() -> None:
    """Every config field is an estimator hyperparameter, defaulting to the default recipe."""
    from darnn.estimator import DARNClassifier
    from darnn.runconfig import DEFAULT_RECIPE

    params = DARNClassifier().get_params()
    for section in (DEFAULT_RECIPE.learning, DEFAULT_RECIPE.network):
        for f in dataclasses.fields(section):
            assert params[f.name] == getattr(section, f.name), f.name


def test_eval_readout_learns_from_the_label_free_state() -> None:
    """With readout_state="eval" W_out learns from the label-free state.

    Hidden updates as with s*, W_out by the rule on the state that prediction reads (warm-up
    + eval sweeps from 0, input only).
    """
    g = torch.Generator().manual_seed(7)
    x = torch.rand(6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    base = LearningConfig(kappa_out=50.0)  # every readout margin fails: W_out must move
    free_net, eval_net, expected = small_net(3), small_net(3), small_net(3)
    learning_step(free_net, x, y, base)
    learning_step(eval_net, x, y, dataclasses.replace(base, readout_state="eval"))

    for name, value in free_net.state_dict().items():
        if name != "w_out.weight":
            assert torch.equal(value, eval_net.state_dict()[name]), name
    scores, relaxed = predict_scores(expected, x, base)
    s = relaxed.states[-1]
    t = expected.targets(y)
    post = (t * scores <= base.kappa_out).to(s.dtype) * t
    w_out = expected.w_out.weight.detach() + base.lr_out / math.sqrt(6 * s.shape[1]) * post.T @ s
    torch.testing.assert_close(eval_net.w_out.weight.detach(), w_out)
    assert not torch.equal(free_net.w_out.weight, eval_net.w_out.weight)


def test_readout_state_is_validated() -> None:
    with pytest.raises(ValueError, match=r"readout_state='label'.*free, eval"):
        LearningConfig(readout_state="label")
