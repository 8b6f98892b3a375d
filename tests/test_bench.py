"""``darnn bench``.

The CLI end to end on digits, parameter matching, the random-features variant,
validation-only learning-rate selection, and bad input.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from darnn.baselines import (
    Split,
    matched_width,
    mlp_parameters,
    parameter_counts,
    tune_mlp,
)
from darnn.bench.methods import load_plan
from darnn.data import load_dataset
from darnn.dynamics import spin_sign
from darnn.epoch import fit_epoch, seeded_generators
from darnn.learning import predict_scores
from darnn.network import Network
from darnn.runconfig import ConfigError, RunConfig

from cli_helpers import assert_user_error, run_main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--quick", "--seeds", "2", "--epochs", "2", "--hidden", "48"]
METHODS = (
    "darnn,random_features,reservoir,mlp_relu,mlp_sign,perceptron,darnn_n400,chain_jd0_lambda2.5"
)


def test_quick_digits_through_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "bench"
    code, stdout, err = run_main(capsys, "bench", *TINY, "--methods", METHODS, "--out", str(out))
    assert code == 0, err
    for name in (
        "results.json",
        "table.md",
        "accuracy_vs_params.png",
        "learning_curves.png",
        "lambda_recovery.png",
        "config.yaml",
        "meta.json",
    ):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    names = METHODS.split(",")
    assert results["status"] == "completed"
    assert [(r["method"], r["seed"]) for r in records] == [(m, s) for m in names for s in (0, 1)]

    # Same data, splits and epochs for every method: the bench's data section, and the
    # fingerprint of the training data each run actually used (darnn runs read it back
    # from their own checkpoint).
    data = load_dataset("digits", val_size=0.1, seed=0)
    split = results["split"]
    assert (split["n_train"], split["n_val"], split["n_test"]) == (
        len(data.y_train),
        len(data.y_val),
        len(data.y_test),
    )
    for r in records:
        assert r["data"] == results["bench"]["data"]
        assert r["train_fingerprint"] == split["train_fingerprint"]
        assert r["epochs"] == 2 and len(r["val_curve"]) == 2
        assert r["val_acc"] == r["val_curve"][-1]
        assert 0.0 <= r["test_acc"] <= 1.0
        if r["kind"] == "darnn":
            run = out / r["run_dir"]
            assert (
                RunConfig.from_dict(r["config"]).data
                == RunConfig.from_dict({"data": results["bench"]["data"]}).data
            )
            metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            assert r["test_acc"] == metrics[-1]["test_acc"]  # the last epoch, not the best
            assert r["config"]["train"]["seed"] == r["seed"]
            assert r["command"].startswith("darnn train --config configs/default.yaml")

    by = {(r["method"], r["seed"]): r for r in records}
    # --hidden made the reference width equal to the main one: trained once, reused.
    reused = by["darnn_n400", 1]
    assert reused["reused_from"] == "darnn"
    assert reused["run_dir"] == by["darnn", 1]["run_dir"] == "runs/darnn/seed1"
    assert reused["config"] == by["darnn", 1]["config"]
    assert not (out / "runs" / "darnn_n400").exists()
    rf = by["random_features", 0]
    assert rf["fixed_weights"] > 0 and rf["params"] == 10 * 48  # only W_out learns
    assert by["chain_jd0_lambda2.5", 0]["config"]["network"]["hidden"] == [24, 24]
    for name in ("mlp_relu", "mlp_sign"):
        first, second = by[name, 0], by[name, 1]
        assert abs(first["params"] - first["params_target"]) <= (64 + 10 + 1) // 2 + 1
        assert first["params_target"] == by["darnn", 0]["params"]
        assert first["test_evaluations"] == second["test_evaluations"] == 1
        grid = first["lr_grid"]  # validation only: no test numbers in the grid
        assert [g["lr"] for g in grid] == [3e-4, 1e-3, 3e-3]
        assert all(set(g) == {"lr", "val_acc", "train_time"} for g in grid)
        best = max(grid, key=lambda g: g["val_acc"])  # the first on a tie, like the bench
        assert first["lr"] == best["lr"] and first["val_acc"] == best["val_acc"]
        assert second["lr"] == first["lr"] and "lr_grid" not in second
    assert by["perceptron", 0]["test_acc"] > 0.5  # 10 classes: chance is 0.1

    table = (out / "table.md").read_text()
    assert table in stdout
    for name in names:
        assert f"| {name} | " in table
    assert "same config and runs as darnn" in table


def test_matched_width_is_closest_parameter_count() -> None:
    for params, n_in, n_out in [(890_886, 784, 10), (1_000, 64, 10), (5, 64, 10), (10**6, 100, 3)]:
        w = matched_width(params, n_in, n_out)
        assert w >= 1
        gap = abs(mlp_parameters(n_in, w, n_out) - params)
        for other in (w - 1, w + 1):
            if other >= 1:
                assert abs(mlp_parameters(n_in, other, n_out) - params) >= gap
    assert mlp_parameters(784, 1120, 10) == 890_410  # 784*1120 + 1120 + 1120*10 + 10


def test_darnn_parameter_count_is_its_trainable_nonzeros() -> None:
    config = RunConfig.from_dict(
        {"network": {"hidden": [300], "j_density": 0.05, "w_in_density": 0.2}}
    )
    net = Network(config.network, 64, 10, seed=0)
    support = sum(int(m.support().sum()) for m in (net.w_in[0], net.recurrent.J[0], net.w_out))
    counts = parameter_counts(net, config.learning)
    assert counts == {"learned": support, "fixed": 0}
    assert int(net.recurrent.J[0].support().diagonal().sum()) == 0  # J_D is not a parameter
    frozen = parameter_counts(
        net, RunConfig.from_dict({"learning": {"lr_in": 0.0, "lr_j": 0.0}}).learning
    )
    assert frozen["learned"] == 300 * 10
    assert frozen["fixed"] == support - 300 * 10


def test_random_features_variant_is_sign_of_the_input_projection() -> None:
    plan = load_plan("digits", hidden=200, epochs=1, methods=["random_features", "darnn"])
    rf, darnn_method = plan.methods[1], plan.methods[0]
    assert rf.name == "random_features" and rf.config is not None
    assert darnn_method.config is not None
    cfg = rf.config
    # The recipe's own self-coupling stays: J_D s only reinforces s = sign(W_in x).
    assert cfg.network.j_d == darnn_method.config.network.j_d > 0
    data = load_dataset("digits", val_size=0.1, seed=0)
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    net = Network(cfg.network, data.n_features, data.n_classes, seed=0)
    assert not any(bool(m.to_dense().any()) for m in net.recurrent.J)  # no recurrence
    before = {k: v.clone() for k, v in net.state_dict().items()}
    order, dynamics = seeded_generators(0)
    fit_epoch(
        net,
        X,
        y,
        cfg.learning,
        32,
        torch.randperm(len(y), generator=order),
        generator=dynamics,
        threads=1,
    )
    after = net.state_dict()
    for key in before:  # only the readout learned
        assert torch.equal(before[key], after[key]) == (not key.startswith("w_out")), key
    Xe = torch.from_numpy(data.X_test)
    scores, relaxed = predict_scores(net, Xe, cfg.learning)
    expected = spin_sign(net.input_drives(Xe)[0])
    assert torch.equal(relaxed.states[0], expected)  # +-1 states: exact comparison
    assert bool(relaxed.converged.all())
    torch.testing.assert_close(scores, net.readout(expected))


class CountingSplit:
    """A split that counts how often its features are read (one read per evaluation)."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.split, self.reads = Split.of(X, y), 0

    @property
    def X(self) -> torch.Tensor:
        self.reads += 1
        return self.split.X

    @property
    def y(self) -> torch.Tensor:
        return self.split.y


def test_mlp_learning_rate_is_chosen_on_validation_and_test_read_once() -> None:
    data = load_dataset("digits", val_size=0.2, seed=0)
    train, val = Split.of(data.X_train, data.y_train), Split.of(data.X_val, data.y_val)
    test = CountingSplit(data.X_test, data.y_test)
    result = tune_mlp(
        train,
        val,
        test,  # type: ignore[arg-type]
        n_classes=10,
        activation="relu",
        width=16,
        epochs=3,
        batch_size=32,
        lrs=[1e-7, 1e-2],  # the first cannot learn in 3 epochs
        seed=0,
        threads=1,
    )
    assert test.reads == 1 and result["test_evaluations"] == 1
    vals = [g["val_acc"] for g in result["lr_grid"]]
    assert vals[1] > vals[0] and result["lr"] == 1e-2
    assert result["val_curve"][-1] == vals[1]
    assert result["params"] == mlp_parameters(64, 16, 10)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--dataset", "nope"], ["unknown bench dataset 'nope'", "fashion-mnist"]),
        (["--dataset", "digits", "--methods", "darnn,nope"], ["unknown method(s) 'nope'"]),
        (["--dataset", "digits", "--hidden", "47", "--methods", "chain_jd0"], ["even size"]),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    out = tmp_path / "bench"
    code, _, err = run_main(capsys, "bench", *args, "--out", str(out))
    assert_user_error(code, err, *fragments)
    assert not out.exists()


def test_non_empty_out_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    code, _, err = run_main(capsys, "bench", *TINY, "--out", str(tmp_path))
    assert_user_error(code, err, "not empty", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def bench_dir(tmp_path: Path, text: str) -> Path:
    """A working directory with configs/default.yaml and configs/bench/custom.yaml."""
    (tmp_path / "configs" / "bench").mkdir(parents=True)
    shutil.copy(ROOT / "configs" / "default.yaml", tmp_path / "configs" / "default.yaml")
    (tmp_path / "configs" / "bench" / "custom.yaml").write_text(text)
    return tmp_path


def test_missing_data_files_exit_2_and_write_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(
        bench_dir(
            tmp_path,
            f"data: {{name: mnist, download: false, data_dir: {empty}}}\nepochs: 1\n"
            "methods: {darnn: {recipe: default.yaml}}\n",
        )
    )
    code, _, err = run_main(capsys, "bench", "--dataset", "custom", "--out", "b")
    assert_user_error(code, err, "'mnist' was not found")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("methods", "fragment"),
    [
        ("{a: {recipe: default.yaml, overrides: [data.limit_train=5]}}", "bench fixes"),
        ("{a: {recipe: default.yaml, overrides: [train.epochs=5]}}", "bench fixes"),
        ("{a: {recipe: nope.yaml}}", "recipe='nope.yaml'"),
        ("{a: {kind: mlp, activation: relu, match: b}}", "match='b'"),
        ("{a: {kind: mlp, activation: tanh, match: a}}", "activation='tanh'"),
        ("{a: {recipe: default.yaml, variant: chain}}", "lambdas"),
        ("{a: {recipe: default.yaml, overrides: [network.j_d=oops]}}", "network.j_d"),
        # the bench file's schema speaks as a run config does
        ("{a: {recipe: default.yaml, colour: red}}", "unknown config key 'methods.a.colour'"),
        ("{a: {recipe: default.yaml, hidden: wide}}", "config key 'methods.a.hidden' has value"),
        ("{a: {kind: robot}}", "methods.a.kind='robot' is not valid; accepted values"),
        ("{a: {kind: mlp, activation: relu, match: a, lrs: [0]}}", "lrs[0]=0 is not valid"),
        ("[a, b]", "config key 'methods' has value ['a', 'b'] of type list; expected a mapping"),
        ("{a: {kind: probe, of: z}}", "of='z'"),
        ("{a: {kind: probe, of: a, state: middle}}", "state='middle'"),
        ("{a: {kind: mlp, activation: relu, match: a, size: huge}}", "size='huge'"),
        ("{a: {recipe: default.yaml, variant: reservoir, lambdas: [1]}}", "cannot go with"),
    ],
)
def test_bench_file_errors_name_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, methods: str, fragment: str
) -> None:
    monkeypatch.chdir(
        bench_dir(tmp_path, f"data: {{name: digits}}\nepochs: 1\nmethods: {methods}\n")
    )
    with pytest.raises(ConfigError) as info:
        load_plan("custom")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "bench").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_bench_file_plans(path: Path) -> None:
    """Every configs/bench file names recipes that exist and keys the bench knows."""
    for quick in (False, True):
        plan = load_plan(path.stem, quick=quick)
        assert plan.methods
        for method in plan.methods:
            if method.config is not None:  # every darnn method trains on the bench's data
                assert method.config.data == plan.data, method.name
                assert method.config.train.epochs == plan.epochs, method.name


def test_resume_continues_an_interrupted_bench(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted inside a darnn run and again before the perceptron, then resumed.

    --resume keeps the finished runs, continues the darnn run from its checkpoint, and ends
    with the results of an uninterrupted bench.
    """
    import darnn.bench.runner as runner

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = [*TINY, "--methods", "darnn,mlp_sign,perceptron"]
    whole = tmp_path / "whole"
    assert run_main(capsys, "bench", *args, "--out", str(whole))[0] == 0

    real_train = runner.training.train
    calls = {"n": 0}

    def stopped_once(*a, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # seed 1 of darnn: stop after 3 batches of epoch 1
            kw["on_batch"] = lambda epoch, done: epoch == 1 and done == 3
        return real_train(*a, **kw)

    cut = tmp_path / "cut"
    monkeypatch.setattr(runner.training, "train", stopped_once)
    code, _, err = run_main(capsys, "bench", *args, "--out", str(cut))
    assert code == 130, err
    assert (cut / "runs" / "darnn" / "seed1" / "checkpoint.safetensors").is_file()
    monkeypatch.setattr(runner.training, "train", real_train)

    def no_perceptron(self, method, seed):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.Bench, "run_perceptron", no_perceptron)
    assert run_main(capsys, "bench", *args, "--out", str(cut), "--resume")[0] == 130
    partial = json.loads((cut / "results.json").read_text())["records"]
    assert [(r["method"], r["seed"]) for r in partial] == [
        ("darnn", 0), ("darnn", 1), ("mlp_sign", 0), ("mlp_sign", 1)
    ]  # fmt: skip
    monkeypatch.undo()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert run_main(capsys, "bench", *args, "--out", str(cut), "--resume")[0] == 0
    done = json.loads((cut / "results.json").read_text())
    assert done["status"] == "completed"
    expected = json.loads((whole / "results.json").read_text())["records"]
    assert [(r["method"], r["seed"], r["test_acc"], r["val_acc"]) for r in done["records"]] == [
        (r["method"], r["seed"], r["test_acc"], r["val_acc"]) for r in expected
    ]
    # Another plan is refused, naming what differs; nothing is written.
    before = (cut / "results.json").read_bytes()
    code, _, err = run_main(capsys, "bench", *args, "--epochs", "1", "--out", str(cut), "--resume")
    assert_user_error(code, err, "another plan", "epochs")
    assert (cut / "results.json").read_bytes() == before
    code, _, err = run_main(capsys, "bench", *args, "--resume")
    assert_user_error(code, err, "--resume needs --out")


WIDTH_SCAN = """
data: {name: digits, limit_train: 400}
epochs: 1
seeds: 1
widths: [16, 32]
quick: {widths: [16]}
methods:
  darnn: {recipe: default.yaml, overrides: [network.j_density=1.0, network.w_in_density=1.0]}
  rf: {recipe: default.yaml, variant: random_features}
  mlp_w: {kind: mlp, activation: sign, match: darnn, size: width, bias: false, lrs: [0.001]}
  probe_all: {kind: probe, of: darnn, state: all, epochs: 3}
  perceptron: {kind: perceptron}
"""


def test_width_scan_names_and_matches_each_width(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(bench_dir(tmp_path, WIDTH_SCAN))
    plan = load_plan("custom")
    names = [m.name for m in plan.methods]
    assert names == [
        "darnn_h16", "rf_h16", "mlp_w_h16", "probe_all_h16", "perceptron",
        "darnn_h32", "rf_h32", "mlp_w_h32", "probe_all_h32",
    ]  # fmt: skip
    assert plan.method("darnn_h32").config.network.hidden == (32,)  # type: ignore[union-attr]
    assert plan.method("mlp_w_h32").match == "darnn_h32"
    assert plan.method("probe_all_h16").of == "darnn_h16"
    assert [m.name for m in load_plan("custom", quick=True).methods][:2] == ["darnn_h16", "rf_h16"]
    assert {m.width for m in load_plan("custom", hidden=64).methods} == {64, None}
    # Asking for a probe alone still trains the network it reads.
    only = load_plan("custom", methods=["probe_all_h16"]).methods
    assert [m.name for m in only] == ["darnn_h16", "probe_all_h16"]


def test_width_scan_runs_probes_and_width_matched_mlps(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(bench_dir(tmp_path, WIDTH_SCAN))
    code, _, err = run_main(capsys, "bench", "--dataset", "custom", "--quick", "--out", "b")
    assert code == 0, err
    records = {
        r["method"]: r for r in json.loads((tmp_path / "b/results.json").read_text())["records"]
    }
    mlp = records["mlp_w_h16"]
    assert (mlp["width"], mlp["bias"], mlp["params"]) == (16, False, 64 * 16 + 16 * 10)
    probe = records["probe_all_h16"]
    assert probe["config"]["features"] == 16 and probe["params"] == 16 * 10
    assert 0.0 <= probe["test_acc"] <= 1.0 and probe["epochs"] == 3
    assert records["darnn_h16"]["bench_width"] == 16
    assert (tmp_path / "b" / "accuracy_vs_width.png").is_file()


def test_probe_reads_the_states_prediction_reads() -> None:
    """representation() is the prediction dynamics' state; a probe fits separable states."""
    from darnn import LearningConfig, NetworkConfig
    from darnn.probe import fit_probe, representation

    net = Network(NetworkConfig(hidden=(12, 12)), n_features=6, n_classes=3, seed=0)
    cfg = LearningConfig()
    X = torch.rand(50, 6)
    states = representation(net, X, cfg, "all", batch_size=7)
    _, relaxed = predict_scores(net, X, cfg)
    assert torch.equal(states, torch.cat(relaxed.states, dim=1))
    assert torch.equal(representation(net, X, cfg, "last"), relaxed.states[-1])
    y = (states[:, 0] > 0).long() + (states[:, 1] > 0).long()
    result = fit_probe((states, y), (states, y), (states, y), 3, epochs=60, lr=0.05)
    assert result.train_acc == result.test_acc > 0.9  # the same split, a separable labelling
    with pytest.raises(ValueError, match="which"):
        representation(net, X, cfg, "middle")


def test_lambda_scan_of_a_two_module_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two = "methods: {a: {recipe: two.yaml, lambdas: [0, 2.5]}}"
    monkeypatch.chdir(
        bench_dir(tmp_path, f"data: {{name: digits}}\nepochs: 1\nhidden: 40\n{two}\n")
    )
    (tmp_path / "configs" / "two.yaml").write_text("network: {hidden: [30, 30]}\n")
    plan = load_plan("custom")
    assert [(m.name, m.lam) for m in plan.methods] == [("a_lambda0", 0.0), ("a_lambda2.5", 2.5)]
    net = plan.methods[1].config.network  # type: ignore[union-attr]
    assert (net.hidden, net.lambda_forward, net.lambda_backward) == ((20, 20), 2.5, 2.5)
    (tmp_path / "configs" / "two.yaml").write_text("network: {hidden: [30]}\n")
    with pytest.raises(ConfigError, match="variant: chain to split it"):
        load_plan("custom")


def test_a_bench_written_before_new_options_resumes() -> None:
    from darnn.bench.runner import same_plan

    wanted = {"methods": [{"name": "a", "config": {"learning": {"lr_j": 0.1, "p_update": 1.0}}}]}
    older = {"methods": [{"name": "a", "config": {"learning": {"lr_j": 0.1}}}]}
    assert same_plan(older, wanted)
    assert not same_plan(wanted, older)  # an option the running darnn lacks
    assert not same_plan({"methods": [{"name": "b"}]}, wanted)
    assert not same_plan({"methods": []}, wanted)
