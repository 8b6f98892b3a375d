"""Contrastive rules and tanh units.

See docs/model.md#contrastive-rules and docs/model.md#continuous-units: one training step
against darnax's numbers, the rules' definitions, and the config errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from darnn import LearningConfig, Network, NetworkConfig
from darnn.config import check_compatible
from darnn.contrastive import Phases, learn, relax_phases
from darnn.dynamics import relax
from darnn.learning import evaluate, learning_step

FIXTURES = Path(__file__).parent / "fixtures" / "darnax"
CASES = {
    # fixture: (activation, rule, tanh_rule)
    "dynamical": ("sign", "dynamical", "delta"),
    "contrastive": ("sign", "contrastive_difference", "delta"),
    "tanh_delta": ("tanh", "dynamical", "delta"),
    "tanh_truncated": ("tanh", "dynamical", "truncated"),
    "contrastive_tanh": ("tanh", "contrastive_difference", "delta"),
}


def _fixture(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return dict(data)


def _network(f: dict[str, np.ndarray], activation: str) -> Network:
    d, n, c = f["w_in"].shape[1], f["j"].shape[0], f["w_out"].shape[0]
    config = NetworkConfig(
        hidden=(n,),
        j_d=float(f["hp_j_d"]),
        activation=activation,
        label_encoding="rescaled",
        sparse_format="dense",
    )
    net = Network(config, n_features=d, n_classes=c, seed=0)
    with torch.no_grad():
        net.w_in[0].weight.copy_(torch.from_numpy(f["w_in"]))
        net.recurrent.J[0].weight.copy_(torch.from_numpy(f["j"]))
        net.w_out.weight.copy_(torch.from_numpy(f["w_out"]))
        net.w_back.copy_(torch.from_numpy(f["w_back"]))
    return net


def _learning(
    f: dict[str, np.ndarray], rule: str, tanh_rule: str, activation: str
) -> LearningConfig:
    contrastive = rule != "dynamical"
    tanh = activation == "tanh"
    return LearningConfig(
        rule=rule,
        # darnax's contrastive trainer has no warm-up: its free phase is free_iter sweeps.
        warmup_sweeps=0 if contrastive else int(f["hp_warmup"]),
        clamped_sweeps=int(f["hp_clamped"]),
        free_sweeps=int(f["hp_free"]),
        margin_convention="total",
        kappa_in=float(f["hp_kappa_in"]),
        kappa_j=float(f["hp_kappa_j"]),
        kappa_out=float(f["hp_kappa_out"]),
        lr_in=float(f["hp_lr_in"]),
        lr_j=float(f["hp_lr_j"]),
        lr_out=float(f["hp_lr_out"]),
        tanh_rule=tanh_rule if tanh else "delta",
        tanh_tolerance=float(f["hp_tolerance"]) if tanh else 0.1,
    )


def _assert_weights(net: Network, f: dict[str, np.ndarray]) -> None:
    # Float32 rounding: darnax and darnn sum the same products in different orders.
    for name, got in (
        ("w_in_after", net.w_in[0].weight),
        ("j_after", net.recurrent.J[0].weight),
        ("w_out_after", net.w_out.weight),
        ("w_back_after", net.w_back),
    ):
        np.testing.assert_allclose(
            got.detach().numpy(), f[name], rtol=1e-5, atol=2e-6, err_msg=name
        )


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_equals_darnax(case: str, batch: int) -> None:
    f = _fixture(f"{case}_b{batch}")
    activation, rule, tanh_rule = CASES[case]
    net = _network(f, activation)
    cfg = _learning(f, rule, tanh_rule, activation)
    before = net.recurrent.J[0].weight.detach().clone()
    learning_step(net, torch.from_numpy(f["x"]), torch.from_numpy(f["y"]).long(), cfg)
    assert not torch.equal(before, net.recurrent.J[0].weight), "the step changed nothing"
    _assert_weights(net, f)


@pytest.mark.parametrize("batch", [1, 16])
def test_darnax_contrastive_as_shipped_keeps_the_label_on(batch: int) -> None:
    """The darnax trainer as shipped is darnn's difference rule with the label on throughout.

    The label field is on during the first phase too (its message subset "left" falls
    through to "all").
    """
    f = _fixture(f"contrastive_as_shipped_b{batch}")
    net = _network(f, "sign")
    cfg = _learning(f, "contrastive_difference", "delta", "sign")
    x, y = torch.from_numpy(f["x"]), torch.from_numpy(f["y"]).long()
    drives = net.input_drives(x)
    clamped_ext = [drives[0] + net.label_field(y)]
    first = relax(net.recurrent, clamped_ext, max_sweeps=cfg.free_sweeps)
    second = relax(net.recurrent, clamped_ext, first.states, max_sweeps=cfg.clamped_sweeps)
    free_fields = [drives[0] + i for i in (first.internal[0], second.internal[0])]
    phases = Phases(
        first.states, free_fields[:1], second.states, free_fields[1:], first.converged, first.sweeps
    )
    learn(net, x, y, phases, cfg)
    _assert_weights(net, f)
    # ... and differs from the label-free step.
    label_free = _fixture(f"contrastive_b{batch}")
    assert not np.allclose(label_free["j_after"], f["j_after"])


def _tiny(activation: str = "sign", **learning: object) -> tuple[Network, LearningConfig]:
    net = Network(NetworkConfig(hidden=(30,), activation=activation), 8, 3, seed=1)
    return net, LearningConfig(**learning)  # type: ignore[arg-type]


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_hebbian_is_clamped_minus_free_correlations() -> None:
    net, cfg = _tiny(rule="contrastive_hebbian", lr_out=0.0, warmup_sweeps=1)
    x, y = _batch()
    w_in, j = net.w_in[0].weight.detach().clone(), net.recurrent.J[0].weight.detach().clone()
    ph = relax_phases(net, x, y, cfg)
    learning_step(net, x, y, cfg)
    sc, sf, b = ph.clamped_states[0], ph.free_states[0], x.shape[0]
    scale_j = cfg.lr_j / (b**0.5 * 30**0.5)
    expected_j = j + scale_j * (sc.T @ sc - sf.T @ sf)
    expected_j.fill_diagonal_(0.0)
    torch.testing.assert_close(net.recurrent.J[0].weight, expected_j)
    expected_in = w_in + cfg.lr_in / (b**0.5 * 8**0.5) * (sc - sf).T @ x
    torch.testing.assert_close(net.w_in[0].weight, expected_in)


def test_tanh_dynamics_run_every_sweep_and_stay_in_range() -> None:
    net, _ = _tiny("tanh")
    x, _ = _batch()
    out = relax(net.recurrent, net.input_drives(x), max_sweeps=7)
    s = out.states[0]
    assert out.sweeps.tolist() == [7] * 6
    assert s.abs().max() <= 1 and (s.abs() < 0.99).any()  # continuous, not spins
    # the fields returned are the fields at the final state, and s = tanh(previous field)
    again = relax(net.recurrent, net.input_drives(x), max_sweeps=8)
    torch.testing.assert_close(again.states[0], torch.tanh(out.fields[0]))
    assert (out.converged == ((torch.tanh(out.fields[0]) - s).abs().amax(1) <= 1e-5)).all()


@pytest.mark.parametrize("rule", ["dynamical", "contrastive_difference", "contrastive_hebbian"])
@pytest.mark.parametrize("activation", ["sign", "tanh"])
def test_every_rule_trains_and_predicts(rule: str, activation: str) -> None:
    net, cfg = _tiny(activation, rule=rule)
    x, y = _batch(32)
    stats = learning_step(net, x, y, cfg)
    assert stats.batch_size == 32 and 0 <= float(stats.unstable) <= 1
    result = evaluate(net, x, y, cfg)
    assert 0 <= result["accuracy"] <= 1


@pytest.mark.parametrize(
    ("network", "learning", "keys"),
    [
        (
            {"activation": "tanh", "readout": "neurons"},
            {},
            ["network.activation", "network.readout"],
        ),
        (
            {"activation": "tanh"},
            {"schedule": "asynchronous"},
            ["learning.schedule", "network.activation"],
        ),
        ({}, {"tanh_rule": "truncated"}, ["learning.tanh_rule", "network.activation"]),
        ({}, {"tanh_tolerance": 0.3}, ["learning.tanh_tolerance", "network.activation"]),
        (
            {},
            {"rule": "contrastive_difference", "clamped_sweeps": 0},
            ["learning.rule", "learning.clamped_sweeps"],
        ),
        (
            {},
            {"rule": "contrastive_hebbian", "clamped_sweeps": 0},
            ["learning.rule", "learning.clamped_sweeps"],
        ),
        (
            {},
            {"rule": "contrastive_hebbian", "readout_state": "eval"},
            ["learning.rule", "learning.readout_state"],
        ),
        (
            {"readout": "neurons"},
            {"rule": "contrastive_difference"},
            ["learning.rule", "network.readout"],
        ),
    ],
)
def test_incompatible_options_name_both_keys(
    network: dict, learning: dict, keys: list[str]
) -> None:
    with pytest.raises(ValueError) as err:
        check_compatible(NetworkConfig(**network), LearningConfig(**learning))
    for key in keys:
        assert key in str(err.value)


def test_unknown_rule_and_activation_are_refused() -> None:
    with pytest.raises(ValueError, match="rule"):
        LearningConfig(rule="contrastive")
    with pytest.raises(ValueError, match="activation"):
        NetworkConfig(activation="relu")


# ----------------------------------------------------------------------------- the doors
def test_estimator_takes_the_rule_and_the_activation() -> None:
    from darnn import DARNClassifier

    x, y = _batch(48)
    clf = DARNClassifier(
        hidden=(20,), rule="contrastive_hebbian", activation="tanh", tanh_rule="truncated",
        tanh_tolerance=0.2, n_epochs=1, batch_size=16, lr_j=0.005, lr_in=0.01,
    )  # fmt: skip
    clf.fit(x.numpy(), y.numpy())
    assert clf.learning_config_.rule == "contrastive_hebbian"
    assert clf.network_config_.activation == "tanh"
    assert clf.get_params()["tanh_rule"] == "truncated"
    assert clf.predict(x.numpy()).shape == (48,)
    with pytest.raises(ValueError, match="clamped_sweeps"):
        DARNClassifier(rule="contrastive_difference", clamped_sweeps=0).fit(x.numpy(), y.numpy())


TRAIN = [
    "data.name=digits", "data.limit_train=200", "data.val_size=50", "network.hidden=[30]",
    "train.epochs=1", "train.batch_size=16", "train.probe_size=8", "train.threads=1",
]  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        ["learning.rule=contrastive_difference"],
        ["learning.rule=contrastive_hebbian", "network.activation=tanh"],
        ["network.activation=tanh", "learning.tanh_rule=truncated"],
    ],
)
def test_darnn_train_runs_every_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    from cli_helpers import run_main

    code, _out, err = run_main(
        capsys, "train", "--quiet", "--out", str(tmp_path / "run"), *TRAIN, *extra
    )
    assert code == 0, err
    assert (tmp_path / "run" / "model.safetensors").exists()
    code, _out, err = run_main(capsys, "eval", str(tmp_path / "run"), "--split", "test")
    assert code == 0, err


@pytest.mark.parametrize(
    ("extra", "keys"),
    [
        (
            ["learning.rule=contrastive_hebbian", "learning.clamped_sweeps=0"],
            ["learning.clamped_sweeps"],
        ),
        (
            ["network.activation=tanh", "network.readout=neurons"],
            ["network.activation", "network.readout"],
        ),
        (
            ["network.activation=tanh", "learning.schedule=asynchronous"],
            ["network.activation", "learning.schedule"],
        ),
        (["learning.rule=contrastive"], ["rule"]),
    ],
)
def test_darnn_train_refuses_bad_combinations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], keys: list[str]
) -> None:
    from cli_helpers import assert_user_error, run_main

    code, _out, err = run_main(capsys, "train", "--out", str(tmp_path / "run"), *TRAIN, *extra)
    assert_user_error(code, err, *keys)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize(
    "extra",
    [
        ["learning.rule=contrastive_difference", "network.activation=tanh"],
        ["learning.rule=contrastive_hebbian", "learning.lr_j=0.005"],
    ],
    ids=["difference-tanh", "hebbian"],
)
def test_two_ranks_equal_one_process(tmp_path: Path, extra: list[str]) -> None:
    from test_distributed import DENSE, assert_close_weights, launch

    from darnn.runconfig import load_run_config
    from darnn.training import train

    overrides = [*DENSE, "data.limit_train=200", *extra]
    train(load_run_config(None, overrides), tmp_path / "one", progress=False)
    results = launch(2, tmp_path / "two", overrides)
    assert [rc for rc, _, _ in results] == [0, 0], results
    assert_close_weights(tmp_path / "one", tmp_path / "two")


@pytest.mark.parametrize("rule", ["contrastive_difference", "contrastive_hebbian"])
@pytest.mark.parametrize("activation", ["sign", "tanh"])
def test_chains_with_csr_and_learned_inter_couplings(rule: str, activation: str) -> None:
    """Two modules, CSR J, sparse learned forward couplings, sequential sweeps.

    Only the support changes, J's diagonal stays empty.
    """
    net = Network(
        NetworkConfig(
            hidden=(30, 30), activation=activation, j_density=0.2, sparse_format="csr",
            inter="sparse", inter_fan_in=3,
        ),
        8, 3, seed=1,
    )  # fmt: skip
    cfg = LearningConfig(rule=rule, schedule="sequential", learn_inter=True, lr_inter=0.01)
    supports = [c.support().clone() for c in (*net.recurrent.J, *net.recurrent.forward_couplings)]
    before = [c.to_dense().clone() for c in (*net.recurrent.J, *net.recurrent.forward_couplings)]
    x, y = _batch(20)
    learning_step(net, x, y, cfg)
    after = [c.to_dense() for c in (*net.recurrent.J, *net.recurrent.forward_couplings)]
    for support, a, b in zip(supports, before, after):
        assert torch.equal(a[~support], b[~support])
        assert not torch.equal(a, b)
    assert evaluate(net, x, y, cfg)["accuracy"] >= 0
