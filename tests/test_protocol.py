"""The authors' protocol (darnn.protocol) against their own PyTorch code.

The fixtures in tests/fixtures/bl were produced by the authors' code (Biological-Learning,
commit 68813fbd) with tests/fixtures/make_bl_fixtures.py: initial weights, three training
steps (final states and weights after each), and evaluation logits before and after. Here
darnn is given the same initial weights and the matching options and must reproduce every
state exactly and every weight to float32 rounding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from darnn import LearningConfig, Network, NetworkConfig, learning_step
from darnn.config import check_compatible
from darnn.learning import protocol_stats
from darnn.protocol import predict, relax_training

FIXTURES = Path(__file__).parent / "fixtures" / "bl"
CASES = sorted(p.stem for p in FIXTURES.glob("*.npz"))


def configs(cfg: dict) -> tuple[NetworkConfig, LearningConfig]:
    """The darnn options for one of their configs (docs/model.md#readout-neurons)."""
    L, H, N = cfg["num_layers"], cfg["H"], cfg["N"]
    lam_in = cfg["lambda_input_skip"]
    chain = L > 1
    lam = cfg["lambda_l"] if chain else 1.0
    net = NetworkConfig(
        hidden=(H,) * L,
        j_d=cfg["J_D"],
        w_in_strength=lam_in[0],
        input_to_all=chain,
        w_in_strengths=tuple(lam_in) if chain else (),
        lambda_forward=lam,
        lambda_backward=cfg["lambda_r"] if chain else 1.0,
        w_out_strength=cfg["lambda_wforth"],
        w_back_strength=cfg["lambda_wback"],
        label_encoding="halved",
        readout="neurons",
        label_strength=cfg["lambda_y"],
        w_back_skip=tuple(cfg["lambda_wback_skip"]),
        w_forth_skip=tuple(cfg["lambda_wforth_skip"]),
        symmetric_w_back=bool(cfg["symmetric_W"]),
    )
    T = cfg["max_steps"]
    ir4 = cfg["inference_ignore_right"] == 4
    lam_fs = cfg["lambda_wforth_skip"][0] if chain else 0.0
    rate = cfg["lr_wforth_skip"] * lam_fs
    learning = LearningConfig(
        warmup_sweeps=L,
        clamped_sweeps=T - L,
        free_sweeps=0,
        eval_sweeps=T - L,
        margin_convention="offdiag_lambda" if ir4 else "offdiag",
        kappa_in=cfg["threshold"][0],
        kappa_j=cfg["threshold"][0],
        kappa_out=cfg["threshold"][-1],
        lr_in=cfg["lr_input_skip"] * lam_in[0],
        lr_j=cfg["lr_J"] * cfg["lambda_internal"],
        lr_out=cfg["lr_W"] * cfg["lambda_wforth"],
        lr_out_skip=rate,
        decay_in=cfg["weight_decay_input_skip"] * cfg["lr_input_skip"] * lam_in[0] / math.sqrt(N),
        decay_j=cfg["weight_decay_J"] * cfg["lr_J"] / math.sqrt(H),
        decay_out=cfg["weight_decay_W"] * cfg["lr_W"] * cfg["lambda_wforth"] / math.sqrt(H),
        decay_out_skip=cfg["weight_decay_wforth_skip"] * rate / math.sqrt(H),
        p_update=cfg["p_update"],
        double_dynamics=bool(cfg["double_dynamics"]),
        double_update=bool(cfg["double_update"]),
        inference_backward=ir4,
    )
    check_compatible(net, learning)
    return net, learning


def tensor(d: np.lib.npyio.NpzFile, name: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(d[name])).float()


def load(d: np.lib.npyio.NpzFile, prefix: str, net: Network) -> None:
    """Their weights (``prefix`` init / stepK) into darnn's network."""
    with torch.no_grad():
        for l, J in enumerate(net.recurrent.J):
            full = tensor(d, f"{prefix}_J{l}")
            assert torch.allclose(full.diagonal(), torch.full_like(full.diagonal(), net.config.j_d))
            J.weight.copy_(full.fill_diagonal_(0))
            net.w_in[l].weight.copy_(tensor(d, f"{prefix}_W_in{l}"))
        net.w_back.copy_(tensor(d, f"{prefix}_W_back"))
        net.w_out.weight.copy_(tensor(d, f"{prefix}_W_forth"))
        for l, skip in enumerate(net.w_back_skip):
            skip.copy_(tensor(d, f"{prefix}_Wback_skip{l}"))
        for l, skip in enumerate(net.w_forth_skip):
            skip.weight.copy_(tensor(d, f"{prefix}_Wforth_skip{l}"))
        for l, (fwd, bwd) in enumerate(
            zip(net.recurrent.forward_couplings, net.recurrent.backward_couplings)
        ):
            fwd.weight.copy_(tensor(d, f"lam_left{l + 1}_diag"))
            bwd.weight.copy_(tensor(d, f"lam_right{l}_diag"))


def weights(net: Network) -> dict[str, torch.Tensor]:
    out = {"W_back": net.w_back, "W_forth": net.w_out.weight}
    for l, J in enumerate(net.recurrent.J):
        out[f"J{l}"] = J.weight.clone().fill_diagonal_(net.config.j_d)
        out[f"W_in{l}"] = net.w_in[l].weight
    out.update({f"Wback_skip{l}": s for l, s in enumerate(net.w_back_skip)})
    out.update({f"Wforth_skip{l}": s.weight for l, s in enumerate(net.w_forth_skip)})
    return out


def replayed_masks(d: np.lib.npyio.NpzFile, L: int, H: int, C: int):  # type: ignore[no-untyped-def]
    """Their update masks, in the order they drew them, as darnn's per-layer lists."""
    if "masks" not in d.files:
        return None
    masks = torch.from_numpy(d["masks"])
    return iter([[m[:, l, :H] for l in range(L)] + [m[:, L, :C]] for m in masks])


@pytest.mark.parametrize("case", CASES)
def test_matches_the_authors_code(case: str) -> None:
    d = np.load(FIXTURES / f"{case}.npz")
    cfg = json.loads(str(d["config_json"]))
    L, H, N, C = cfg["num_layers"], cfg["H"], cfg["N"], cfg["C"]
    net_cfg, cfg_l = configs(cfg)
    net = Network(net_cfg, N, C, seed=0)
    load(d, "init", net)
    masks = replayed_masks(d, L, H, C)
    eval_x = tensor(d, "eval_x")

    def check_eval(when: str) -> None:
        logits, relaxation = predict(net, eval_x, cfg_l, masks=masks)
        for l in range(L):
            assert torch.equal(relaxation.states[l], tensor(d, f"eval_{when}_s{l}")), (when, l)
        torch.testing.assert_close(logits, tensor(d, f"eval_{when}_logits"), rtol=1e-5, atol=1e-5)

    check_eval("before")
    for k in range(int(d["steps"])):
        x, y = tensor(d, "train_x")[k], torch.from_numpy(d["train_y"][k]).long()
        relaxed = relax_training(net, x, y, cfg_l, masks=masks)
        for l in range(L):
            assert torch.equal(relaxed.final.modules[l], tensor(d, f"step{k}_s{l}")), (k, l)
        if relaxed.first is not None:
            for l in range(L):
                assert torch.equal(relaxed.first.modules[l], tensor(d, f"step{k}_ffp_s{l}"))
        protocol_stats(net, x, y, relaxed, cfg_l)
        # The readout as their rule left it: coded twice (n = e(e(r))).
        torch.testing.assert_close(relaxed.final.readout, tensor(d, f"step{k}_r"))
        for name, value in weights(net).items():
            torch.testing.assert_close(
                value, tensor(d, f"step{k}_{name}"), rtol=1e-5, atol=2e-6, msg=f"{case} {k} {name}"
            )
    check_eval("after")


@pytest.mark.parametrize("case", [c for c in CASES if "p08" not in c])
def test_learning_step_is_the_protocol(case: str) -> None:
    """The public learning_step runs the same protocol (p_update = 1: no masks to replay)."""
    d = np.load(FIXTURES / f"{case}.npz")
    cfg = json.loads(str(d["config_json"]))
    net_cfg, cfg_l = configs(cfg)
    net = Network(net_cfg, cfg["N"], cfg["C"], seed=0)
    load(d, "init", net)
    x, y = tensor(d, "train_x")[0], torch.from_numpy(d["train_y"][0]).long()
    learning_step(net, x, y, cfg_l)
    for name, value in weights(net).items():
        torch.testing.assert_close(value, tensor(d, f"step0_{name}"), rtol=1e-5, atol=2e-6)


NEURONS = ["network.readout=neurons", "learning.free_sweeps=0"]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["learning.double_update=true"], ["double_update", "double_dynamics"]),
        ([*NEURONS, "learning.p_update=0"], ["p_update", "(0, 1]"]),
        ([*NEURONS, "learning.p_update=1.5"], ["p_update", "(0, 1]"]),
        (["learning.p_update=0.8"], ["learning.p_update", "network.readout=neurons"]),
        (["learning.double_dynamics=true"], ["learning.double_dynamics", "network.readout"]),
        (["network.w_back_skip=[0.9]"], ["w_back_skip", "hidden"]),
        (["network.hidden=[30,30]", "network.w_forth_skip=[1.0]"], ["w_forth_skip", "neurons"]),
        (
            [*NEURONS, "network.hidden=[30,30]", "network.w_back_skip=[1,2]"],
            ["w_back_skip", "1 values"],
        ),
        (
            [*NEURONS, "network.hidden=[30,30]", "network.w_in_strengths=[5,5]"],
            ["w_in_strengths", "input_to_all"],
        ),
        ([*NEURONS, "learning.schedule=asynchronous"], ["schedule", "synchronous"]),
        ([*NEURONS, "learning.readout_state=eval"], ["readout_state", "neurons"]),
        ([*NEURONS, "network.label_encoding=twos"], ["label_encoding", "halved"]),
        ([*NEURONS, "network.readout=spins"], ["readout", "perceptron, neurons"]),
    ],
)
def test_contradictory_options_are_config_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, overrides: list[str], fragments: list[str]
) -> None:
    from cli_helpers import assert_user_error, run_main

    out = tmp_path / "run"
    code, _, err = run_main(capsys, "train", "--out", str(out), "data.name=digits", *overrides)
    assert_user_error(code, err, *fragments)
    assert not out.exists()


def test_authors_recipes_train_through_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Every shipped authors' recipe runs (tiny: digits, narrow modules, one epoch)."""
    from cli_helpers import run_main

    for recipe in sorted((Path(__file__).parents[1] / "configs" / "authors").glob("*.yaml")):
        n = 2 if "2layer" in recipe.name or "lambda" in recipe.name else 1
        code, out, err = run_main(
            capsys, "train", "--config", str(recipe), "--out", str(tmp_path / recipe.stem),
            "--quiet", "data.name=digits", "data.limit_train=200",
            f"network.hidden={[24] * n}".replace(" ", ""),
            f"network.w_in_strengths={[5.0] * n if n > 1 else []}".replace(" ", ""),
            "train.epochs=1",
        )  # fmt: skip
        assert code == 0, err
        assert "test accuracy" in out
        metrics = json.loads(
            (tmp_path / recipe.stem / "metrics.jsonl").read_text().splitlines()[-1]
        )
        assert 0.0 <= metrics["test_acc"] <= 1.0


def test_estimator_runs_the_protocol() -> None:
    from sklearn.datasets import load_digits

    from darnn import DARNClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    clf = DARNClassifier(
        hidden=(64,), readout="neurons", label_encoding="halved", free_sweeps=0,
        double_dynamics=True, p_update=0.9, margin_convention="offdiag", kappa_in=0.9,
        kappa_j=0.9, kappa_out=3.0, j_d=0.5, lr_in=0.15, lr_j=0.005, lr_out=0.1,
        n_epochs=3, random_state=0,
    )  # fmt: skip
    clf.fit(X[:1000], y[:1000])
    assert clf.score(X[1000:], y[1000:]) > 0.5  # chance is 0.1
    again = DARNClassifier(**clf.get_params()).fit(X[:1000], y[:1000])
    assert np.array_equal(again.decision_function(X[1000:]), clf.decision_function(X[1000:]))
    with pytest.raises(ValueError, match="p_update"):
        DARNClassifier(p_update=0.5).fit(X[:50], y[:50])


def test_readout_neurons_in_a_three_module_chain(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Skips into and out of every non-last module of a deeper chain.

    Trained through the CLI, the readout skips learn and the feedback skips stay fixed.
    """
    from cli_helpers import run_main

    out = tmp_path / "three"
    code, _, err = run_main(
        capsys, "train", "--config", "configs/authors/lambda_advantage.yaml", "--out", str(out),
        "--quiet", "data.name=digits", "data.limit_train=600", "network.hidden=[24,24,24]",
        "network.w_in_strengths=[5,5,5]", "network.w_back_skip=[0.9,0.9]",
        "network.w_forth_skip=[1,1]", "learning.warmup_sweeps=3", "train.epochs=3",
    )  # fmt: skip
    assert code == 0, err
    from darnn.modelfiles import load_model

    net = load_model(out / "model")
    assert len(net.w_back_skip) == 2 and len(net.w_forth_skip) == 2
    fresh = Network(net.config, net.n_features, net.n_classes, seed=0)
    for trained, initial in zip(net.w_forth_skip, fresh.w_forth_skip):
        assert not torch.equal(trained.weight, initial.weight)  # the skips learned
    for trained, initial in zip(net.w_back_skip, fresh.w_back_skip):
        assert torch.equal(trained, initial)  # the feedback skips never change
