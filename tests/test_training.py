"""Run configs, the training loop, run directories, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch

from darnn import fused
from darnn.config import to_dict
from darnn.data import DataError
from darnn.diagnostics import coupling_symmetry
from darnn.errors import RunError
from darnn.modelfiles import load_checkpoint, load_model, save_checkpoint, save_model
from darnn.runconfig import ConfigError, RunConfig, load_run_config
from darnn.rundir import CHECKPOINT_FILE, read_run_config
from darnn.training import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# A tiny, dense, single-threaded run on scikit-learn's digits: well under a second per epoch.
TINY = [
    "data.name=digits",
    "network.hidden=[48]",
    "network.j_density=1.0",
    "network.w_in_density=1.0",
    "train.epochs=2",
    "train.batch_size=32",
    "train.threads=1",
    "train.probe_size=64",
]


def tiny(*overrides: str) -> RunConfig:
    return load_run_config(None, [*TINY, *overrides])


def run_files(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def without_times(metrics: list[dict]) -> list[dict]:
    drop = {"train_time", "samples_per_s", "wall_time"}
    return [{k: v for k, v in m.items() if k not in drop} for m in metrics]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete two-epoch run, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs") / "complete"
    summary = train(tiny(), out, progress=False, command=["pytest"])
    assert summary["status"] == "completed"
    return out


# ---------------------------------------------------------------- configs


def test_default_yaml_is_the_builtin_default_recipe() -> None:
    assert load_run_config(CONFIGS / "default.yaml") == RunConfig()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path) -> None:
    config = load_run_config(path)
    assert config.train.epochs >= 1


def test_overrides_layer_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("data: {name: digits}\nlearning: {lr_j: 2e-3}\nnetwork: {hidden: [10, 10]}\n")
    config = load_run_config(path, ["learning.lr_j=1e-3", "data.transform=binarised"])
    assert config.learning.lr_j == 1e-3  # "1e-3" is a float here, not YAML 1.1's string
    assert config.network.hidden == (10, 10)
    assert config.data.transform == "binarised"
    assert config.train == RunConfig().train  # untouched sections keep the default recipe


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.nope=1"], "unknown config key 'train.nope'"),
        (["model.hidden=[3]"], "unknown config section 'model'"),
        (["train.epochs=three"], "'train.epochs' has value 'three'"),
        (["network.hidden=[0]"], "config section 'network': hidden=(0,)"),
        (["learning.schedule=random"], "schedule='random' is not valid"),
        (["train.device=tpu"], "device='tpu' is not valid"),
        (["data.transform=rotate"], "transform='rotate' is not valid"),
        (["epochs=3"], "not of the form section.key=value"),
        (["train.epochs=[1"], "is not valid YAML"),
    ],
)
def test_config_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_run_config(None, overrides)
    assert message in str(info.value)


def test_config_file_must_be_sections(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_run_config(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_run_config(tmp_path / "absent.yaml")


# ---------------------------------------------------------------- a complete run


def test_run_directory_holds_every_file(finished_run: Path) -> None:
    assert run_files(finished_run) == {
        "config.yaml",
        "meta.json",
        "metrics.jsonl",
        CHECKPOINT_FILE,
        "model.safetensors",
        "model.json",
        "learning_curves.png",
        "field_histograms.png",
    }
    assert read_run_config(finished_run) == tiny()
    meta = json.loads((finished_run / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["command"] == ["pytest"]
    assert {"darnn", "torch", "numpy", "python"} <= meta["versions"].keys()
    metrics = read_metrics(finished_run)
    assert [m["epoch"] for m in metrics] == [1, 2]
    last = metrics[-1]
    for key in ("train_acc", "val_acc", "test_acc", "unstable", "converged"):
        assert 0.0 <= last[key] <= 1.0, key
    assert last["test_acc"] > 0.5  # ten classes: far above chance after two epochs
    assert last["free_sweeps"] >= 0 and last["eval_sweeps"] >= 0 and last["samples_per_s"] > 0
    # The kernel that ran the dynamics (learning.kernel=auto: fused for this small network
    # where the C kernel can be built, see darnn.fused).
    expected = "fused" if fused.library() is not None else "torch"
    assert last["kernel"] == expected and last["eval_kernel"] in ("fused", "torch")
    assert len(last["symmetry"]) == 1 and -1 <= last["symmetry"][0] <= 1
    layer = last["fields"][0]
    assert set(layer) == {"internal", "input", "label"}
    assert set(layer["input"]) == {"mean", "std", "aligned"}


def test_saved_model_predicts_like_the_trained_one(finished_run: Path, tmp_path: Path) -> None:
    net = load_model(finished_run / "model.safetensors")
    info = json.loads((finished_run / "model.json").read_text())
    assert info["n_features"] == 64 and info["n_classes"] == 10 and info["dtype"] == "float32"
    assert info["network"] == to_dict(tiny().network)
    assert {t["format"] for t in info["tensors"].values()} >= {"dense"}
    # A round trip through save_model/load_model keeps every tensor bit for bit.
    save_model(net, tmp_path / "copy", seed=info["seed"])
    assert_same_weights(net, load_model(tmp_path / "copy"))


def test_sparse_couplings_round_trip(tmp_path: Path) -> None:
    config = tiny("network.j_density=0.1", "network.sparse_format=csr", "train.epochs=1")
    train(config, tmp_path / "run", progress=False)
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["tensors"]["recurrent.J.0.col"]["format"] == "csr.col"
    net = load_model(tmp_path / "run" / "model")
    assert net.recurrent.J[0].nnz < 48 * 47


def test_coupling_symmetry_extremes() -> None:
    J = torch.randn(30, 30)
    assert coupling_symmetry(J + J.T) == pytest.approx(1.0)
    assert coupling_symmetry(J - J.T) == pytest.approx(-1.0)
    assert coupling_symmetry(torch.zeros(3, 3)) == 0.0


# ---------------------------------------------------------------- interrupt and resume


def test_interrupted_and_resumed_run_ends_with_identical_weights(
    finished_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # Stop inside the second epoch, after its 7th batch (as Ctrl-C would).
    summary = train(
        tiny(), out, progress=False, on_batch=lambda epoch, done: (epoch, done) == (1, 7)
    )
    assert summary["status"] == "interrupted"
    assert summary["position"] == {"epoch": 1, "batch": 7, "n_batches": 41}
    assert "model.safetensors" not in run_files(out)
    assert train(tiny(), out, resume=True, progress=False)["status"] == "completed"
    assert_same_weights(load_model(out / "model"), load_model(finished_run / "model"))
    assert without_times(read_metrics(out)) == without_times(read_metrics(finished_run))
    assert len(json.loads((out / "meta.json").read_text())["resumed"]) == 1


def test_sigint_saves_the_exact_position(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"

    def ctrl_c(epoch: int, done: int) -> None:
        if (epoch, done) == (0, 3):
            os.kill(os.getpid(), signal.SIGINT)  # handled: stop after this batch

    before = signal.getsignal(signal.SIGINT)
    summary = train(tiny(), out, progress=False, on_batch=ctrl_c)
    assert signal.getsignal(signal.SIGINT) is before
    assert summary["status"] == "interrupted" and summary["position"]["batch"] == 3
    state, tensors = load_checkpoint(out / CHECKPOINT_FILE)
    assert (state["epoch"], state["batch"]) == (0, 3)
    assert "position.permutation" in tensors
    train(tiny(), out, resume=True, progress=False)
    assert_same_weights(load_model(out / "model"), load_model(finished_run / "model"))


def test_mid_epoch_checkpoints_and_longer_resume(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny("train.epochs=1", "train.checkpoint_every=10"), out, progress=False)
    # train.epochs may grow on resume: the run continues as if it had been asked for 2.
    train(tiny("train.checkpoint_every=10"), out, resume=True, progress=False)
    assert_same_weights(load_model(out / "model"), load_model(finished_run / "model"))


def test_resume_refuses_a_changed_config(finished_run: Path) -> None:
    with pytest.raises(ConfigError, match=r"different config \(learning\.lr_j: 0\.058 -> 0\.5\)"):
        train(tiny("learning.lr_j=0.5"), finished_run, resume=True, progress=False)


def test_config_keys_added_since_a_run_are_unchanged_at_their_defaults() -> None:
    """A run written before an option existed resumes while that option keeps its default.

    A non-default value of it is a change.
    """
    from darnn.runconfig import RunConfig, changed_keys

    now = RunConfig()
    older = now.to_dict()
    del older["learning"]["p_update"], older["network"]["readout"]
    assert changed_keys(older, now) == []
    neurons = RunConfig.from_dict({"network": {"readout": "neurons"}})
    assert "network.readout" in changed_keys(older, neurons)


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny(), out, progress=False, on_batch=lambda epoch, done: done == 2)
    path = out / CHECKPOINT_FILE
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit in the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(RunError, match="fails its SHA-256 check"):
        train(tiny(), out, resume=True, progress=False)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(RunError, match="not a readable safetensors file"):
        train(tiny(), out, resume=True, progress=False)


def test_corrupt_model_is_refused(finished_run: Path, tmp_path: Path) -> None:
    for name in ("model.safetensors", "model.json"):
        (tmp_path / name).write_bytes((finished_run / name).read_bytes())
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(RunError, match="do not match the SHA-256"):
        load_model(tmp_path / "model")
    # A file whose hash is recorded but whose tensors do not fit the described network.
    info = json.loads((tmp_path / "model.json").read_text())
    info["network"]["hidden"] = [49]
    weights.write_bytes((finished_run / "model.safetensors").read_bytes())
    (tmp_path / "model.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match=r"shape \(48, 10\); the described network needs"):
        load_model(tmp_path / "model")


# ---------------------------------------------------------------- refusing and cleaning up


def test_non_empty_out_is_refused(finished_run: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    with pytest.raises(RunError, match="already exists and is not empty"):
        train(tiny(), finished_run, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before


def test_missing_dataset_creates_nothing(tmp_path: Path) -> None:
    config = tiny("data.name=kmnist", "data.download=false", f"data.data_dir={tmp_path}")
    with pytest.raises(DataError, match="was not found"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_failed_new_run_leaves_no_files(tmp_path: Path) -> None:
    def boom(epoch: int, done: int) -> None:
        raise RuntimeError("simulated failure")

    with pytest.raises(RuntimeError, match="simulated failure"):
        train(tiny(), tmp_path / "run", progress=False, on_batch=boom)
    assert not (tmp_path / "run").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError):
        train(tiny(), empty, progress=False, on_batch=boom)
    assert empty.is_dir() and not any(empty.iterdir())


def test_train_config_is_frozen_and_validated() -> None:
    config = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="checkpoint_every"):
        load_run_config(None, ["train.checkpoint_every=0"])


# ---------------------------------------------------------------- hardening


def test_sigterm_stops_like_sigint(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"

    def kill(epoch: int, done: int) -> None:
        if (epoch, done) == (1, 2):
            os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends before killing
            os.kill(os.getpid(), signal.SIGTERM)  # a repeat (torchrun may forward twice)

    before = signal.getsignal(signal.SIGTERM)
    summary = train(tiny(), out, progress=False, on_batch=kill)
    assert signal.getsignal(signal.SIGTERM) is before
    assert summary["status"] == "interrupted" and summary["position"]["batch"] == 2
    train(tiny(), out, resume=True, progress=False)
    assert_same_weights(load_model(out / "model"), load_model(finished_run / "model"))


def test_resume_refuses_an_edited_config_yaml(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny(), out, progress=False, on_batch=lambda epoch, done: done == 3)
    text = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(text.replace("lr_j: 0.058", "lr_j: 0.1"))
    edited = load_run_config(None, base=read_run_config(out))
    with pytest.raises(ConfigError, match=r"learning\.lr_j: 0\.058 -> 0\.1"):
        train(edited, out, resume=True, progress=False)
    # More epochs on resume stay allowed.
    assert train(tiny("train.epochs=3"), out, resume=True, progress=False)["epochs"] == 3


def test_resume_after_a_kill_before_the_first_checkpoint(
    finished_run: Path, tmp_path: Path
) -> None:
    """A process killed during its first epoch is resumed from scratch, exactly.

    It leaves config.yaml, meta.json and maybe a half-written temporary file: resuming
    removes the temporary and starts over exactly.
    """
    out = tmp_path / "run"
    train(tiny(), out, progress=False, on_batch=lambda epoch, done: done == 1)
    (out / CHECKPOINT_FILE).unlink()  # as if killed before the first save
    (out / ".checkpoint.safetensors.x1y2.tmp").write_bytes(b"partial")
    train(tiny(), out, resume=True, progress=False)
    assert not list(out.glob(".*.tmp"))
    assert_same_weights(load_model(out / "model"), load_model(finished_run / "model"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epoch", -1, "epoch=-1"),
        ("batch", 10**9, "batch=1000000000"),
        ("batch", "3", "batch='3'"),
        ("counters", {"seen": 1}, "counters"),
        ("metrics", "x", "metrics"),
    ],
)
def test_crafted_checkpoint_fields_are_refused(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    out = tmp_path / "run"
    train(tiny(), out, progress=False, on_batch=lambda epoch, done: done == 3)
    state, tensors = load_checkpoint(out / CHECKPOINT_FILE)
    state[field] = value
    save_checkpoint(out / CHECKPOINT_FILE, state, tensors)  # re-signed: only the content lies
    with pytest.raises(RunError, match=re.escape(message)):
        train(tiny(), out, resume=True, progress=False)


@pytest.mark.parametrize(
    ("name", "tensor", "message"),
    [
        ("position.permutation", torch.arange(5), "not a permutation"),
        ("position.permutation", torch.zeros(1294, dtype=torch.int64), "not a permutation"),
        ("rng.order", torch.zeros(3, dtype=torch.uint8), "generator state rng.order"),
    ],
)
def test_crafted_checkpoint_tensors_are_refused(
    tmp_path: Path, name: str, tensor: torch.Tensor, message: str
) -> None:
    out = tmp_path / "run"
    train(tiny(), out, progress=False, on_batch=lambda epoch, done: done == 3)
    state, tensors = load_checkpoint(out / CHECKPOINT_FILE)
    tensors[name] = tensor
    save_checkpoint(out / CHECKPOINT_FILE, state, tensors)
    with pytest.raises(RunError, match=message):
        train(tiny(), out, resume=True, progress=False)


def test_unusable_out_is_refused_before_the_data_load(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker / "run", Path("/proc/darnn-run")):
        # digits would load; a missing dataset proves the directory is checked first.
        with pytest.raises(RunError, match="Cannot create the run directory"):
            train(tiny("data.name=npz:/nonexistent.npz"), out, progress=False)
    assert blocker.read_text() == "x"


def test_progress_in_a_log_file_is_one_line_per_epoch(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    train(tiny(), tmp_path / "run", progress=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    assert [line.split(":")[0] for line in err.splitlines()] == ["epoch 1/2", "epoch 2/2"]


def test_on_epoch_can_stop_a_run(tmp_path: Path) -> None:
    seen: list[int] = []
    summary = train(
        tiny(), tmp_path / "run", progress=False, on_epoch=lambda r: seen.append(r["epoch"]) or True
    )
    assert seen == [1] and summary["status"] == "stopped" and summary["epochs"] == 1
    assert "model.safetensors" not in run_files(tmp_path / "run")


def test_stop_after_the_last_batch_of_an_epoch_resumes(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = train(tiny(), out, progress=False, on_batch=lambda epoch, done: done == 41)
    assert summary["position"] == {"epoch": 0, "batch": 41, "n_batches": 41}
    train(tiny(), out, resume=True, progress=False)
    assert_same_weights(load_model(out / "model"), load_model(finished_run / "model"))
