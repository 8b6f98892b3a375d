"""Run configuration and the training loop behind ``darnn train``.

A run is described by one YAML file with four sections: ``data`` (DataConfig), ``network``
(NetworkConfig), ``learning`` (LearningConfig) and ``train`` (TrainConfig), grouped in a
RunConfig. Whatever a file or ``section.key=value`` override leaves out takes the value of
the default recipe (``RunConfig()``, the same numbers as configs/default.yaml).

``train`` is the whole loop, top to bottom: load data, build the network, then per epoch
one ``learning_step`` per batch in a seeded random order, evaluation on validation and test,
dynamics diagnostics, a checkpoint. Ctrl-C stops at the next batch boundary and saves the
exact position, so ``--resume`` ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import __version__
from .config import LearningConfig, NetworkConfig, from_dict, to_dict
from .data import DataError, Dataset, load_dataset
from .learning import StepStats, evaluate, learning_step, two_phase
from .network import Network
from .runs import (
    DTYPES,
    RunError,
    check_tensors,
    load_checkpoint,
    plot_field_histograms,
    plot_learning_curves,
    save_checkpoint,
    save_model,
    write_json,
    write_jsonl,
    write_text,
)

CONFIG_FILE, META_FILE, METRICS_FILE = "config.yaml", "meta.json", "metrics.jsonl"
CHECKPOINT_FILE, MODEL_STEM = "checkpoint.safetensors", "model"
CURVES_FILE, FIELDS_FILE = "learning_curves.png", "field_histograms.png"
TRANSFORMS = ("entangled", "binarised")
# Settings that may change when a run is resumed: none changes what is learned (another
# device or thread count may still round differently).
RESUMABLE_KEYS = (
    "train.epochs",
    "train.device",
    "train.threads",
    "train.eval_batch_size",
    "train.checkpoint_every",
    "data.data_dir",
    "data.download",
)


class ConfigError(RunError):
    """A config file, section, key or value is invalid; the message names it."""


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DataConfig:
    """Which data set, its validation split and input transform (see darnn.data)."""

    name: str = "fashion-mnist"  # a darnn.data.DATASETS entry or "npz:PATH"
    data_dir: str | None = None  # searched first for the IDX files
    download: bool = True  # fetch a missing MNIST-family set (checksums verified)
    val_size: float | int = 0.1  # fraction of the training data, or a count
    split_seed: int = 0  # fixes the validation split, whatever the training seed
    limit_train: int | None = None  # keep only this many training samples
    transform: str | None = None  # None, "entangled" (SPEC §4 C) or "binarised" (§4 B)
    transform_dim: int | None = None  # projection size (default 100 entangled, D binarised)
    transform_seed: int = 0  # seed of the fixed Gaussian projection

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must name a dataset, e.g. fashion-mnist, digits, npz:PATH")
        if self.transform not in (None, *TRANSFORMS):
            raise ValueError(
                f"transform={self.transform!r} is not valid; accepted values: "
                f"null, {', '.join(TRANSFORMS)}"
            )
        if self.transform_dim is not None and (self.transform is None or self.transform_dim < 1):
            raise ValueError(
                f"transform_dim={self.transform_dim!r} is not valid; it needs a "
                "transform and must be >= 1"
            )
        if self.limit_train is not None and self.limit_train < 1:
            raise ValueError(f"limit_train={self.limit_train!r} is not valid; it must be >= 1")
        size = self.val_size
        if (isinstance(size, float) and not 0 <= size < 1) or (isinstance(size, int) and size < 0):
            raise ValueError(
                f"val_size={size!r} is not valid; give a fraction in [0, 1) or a count >= 0"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Epochs, batching, seed, device and checkpointing of a run."""

    epochs: int = 20
    batch_size: int = 16
    eval_batch_size: int = 1000
    seed: int = 0  # network init, epoch order, asynchronous dynamics
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    dtype: str = "float32"  # "float32" or "float64"
    checkpoint_every: int | str = "epoch"  # "epoch", or also every N batches within an epoch
    probe_size: int = 256  # fixed training samples on which field statistics are measured
    threads: int | None = None  # CPU threads for torch during the run (None: torch's default)

    def __post_init__(self) -> None:
        for name, minimum in (
            ("epochs", 1),
            ("batch_size", 1),
            ("eval_batch_size", 1),
            ("probe_size", 1),
            ("threads", 1),
        ):
            if getattr(self, name) is not None and getattr(self, name) < minimum:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not valid; it must be an "
                    f"integer >= {minimum}"
                )
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(
                f"device={self.device!r} is not valid; accepted values: cpu, cuda, cuda:N"
            )
        if self.dtype not in DTYPES:
            raise ValueError(
                f"dtype={self.dtype!r} is not valid; accepted values: {', '.join(DTYPES)}"
            )
        every = self.checkpoint_every
        if every != "epoch" and not (isinstance(every, int) and every >= 1):
            raise ValueError(
                f"checkpoint_every={every!r} is not valid; give 'epoch' or a number of batches >= 1"
            )


# The default recipe (configs/default.yaml says where each number comes from): recipe A's
# rule, margins and rates on a wider sparse module with weaker label feedback and batches
# of 64, measured to reach >= 0.85 test accuracy on Fashion-MNIST in under 10 minutes on a
# 2-core CPU.
DEFAULT_NETWORK = NetworkConfig(
    hidden=(6000,), j_density=0.01, w_in_density=0.1, w_back_strength=0.6
)
DEFAULT_LEARNING = LearningConfig()
DEFAULT_TRAIN = TrainConfig(epochs=10, batch_size=64, threads=1)
_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "network": NetworkConfig,
    "learning": LearningConfig,
    "train": TrainConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """The four sections of a run config; defaults are the default recipe."""

    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=lambda: DEFAULT_NETWORK)
    learning: LearningConfig = field(default_factory=lambda: DEFAULT_LEARNING)
    train: TrainConfig = field(default_factory=lambda: DEFAULT_TRAIN)

    @classmethod
    def from_dict(cls, mapping: dict[str, Any]) -> RunConfig:
        """Validate ``mapping`` (sections of keys) layered on top of the default recipe."""
        merged = merge_config(RunConfig().to_dict(), mapping)
        sections = {}
        for f in dataclasses.fields(cls):
            try:
                sections[f.name] = from_dict(_SECTIONS[f.name], merged[f.name], section=f.name)
            except (TypeError, ValueError) as exc:
                message = str(exc)
                if f"'{f.name}." not in message:  # __post_init__ messages lack the section
                    message = f"config section '{f.name}': {message}"
                raise ConfigError(message) from None
        return cls(**sections)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}


def merge_config(
    base: dict[str, dict[str, Any]], update: Any, origin: str = "config"
) -> dict[str, dict[str, Any]]:
    """``base`` with the sections of ``update`` laid over it, key by key (new dicts)."""
    if update is None:
        update = {}
    if not isinstance(update, dict):
        raise ConfigError(
            f"{origin} must be a mapping of sections ({', '.join(_SECTIONS)}), "
            f"got {type(update).__name__}"
        )
    merged = {name: dict(keys) for name, keys in base.items()}
    for name, keys in update.items():
        if name not in _SECTIONS:
            raise ConfigError(
                f"unknown config section '{name}' in {origin}; valid sections: "
                f"{', '.join(_SECTIONS)}"
            )
        if keys is None:
            continue
        if not isinstance(keys, dict):
            raise ConfigError(
                f"config section '{name}' in {origin} must be a mapping of "
                f"keys to values, got {keys!r}"
            )
        merged[name].update(keys)
    return merged


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 as a float (YAML 1.1 wants 1.0e-3)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} is not valid YAML: {exc}".replace("\n", " ")) from None


def parse_override(item: str) -> dict[str, dict[str, Any]]:
    """``"section.key=value"`` (value parsed as YAML) as ``{section: {key: value}}``."""
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ConfigError(
            f"override {item!r} is not of the form section.key=value, e.g. "
            "train.epochs=3 or network.hidden=[800,800]"
        )
    return {section: {name: parse_yaml(raw, f"the value of override {item!r}")}}


def read_config_file(path: str | os.PathLike[str]) -> Any:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return parse_yaml(text, f"config file {path}")


def load_run_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    base: RunConfig | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
) -> RunConfig:
    """``base`` (default recipe) <- config file <- ``section.key=value`` overrides <- ``settings``.

    ``settings`` holds values that are already typed (command-line options such as a
    --data-dir path, which must not be reinterpreted as YAML).
    """
    merged = (base or RunConfig()).to_dict()
    if path is not None:
        merged = merge_config(merged, read_config_file(path), f"config file {path}")
    for item in overrides:
        merged = merge_config(merged, parse_override(item), f"override {item!r}")
    merged = merge_config(merged, settings, "command-line options")
    return RunConfig.from_dict(merged)


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


# ---------------------------------------------------------------- data and devices


def load_data(
    config: DataConfig, *, name: str | None = None, data_dir: str | None = None
) -> Dataset:
    """The data set a DataConfig describes (``name``/``data_dir`` replace the config's)."""
    try:
        return load_dataset(
            name or config.name,
            data_dir=data_dir or config.data_dir,
            val_size=config.val_size,
            seed=config.split_seed,
            transform=config.transform,
            transform_dim=config.transform_dim,
            transform_seed=config.transform_seed,
            limit_train=config.limit_train,
            download=config.download,
        )
    except DataError:
        raise  # already a complete user-facing message
    except (TypeError, ValueError) as exc:  # an argument the data section passed on
        raise ConfigError(f"config section 'data': {exc}") from None


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={name!r} but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use --device cpu"
        )
    return torch.device(name)


def _seeded_generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Independent CPU generators for the epoch order and the asynchronous dynamics."""
    streams = np.random.SeedSequence(seed).spawn(2)
    order, dynamics = (int(s.generate_state(1)[0]) for s in streams)
    return torch.Generator().manual_seed(order), torch.Generator().manual_seed(dynamics)


def _fingerprint(data: Dataset) -> str:
    """Identifies the training data, so a resumed run cannot silently train on other data."""
    digest = hashlib.sha256(np.ascontiguousarray(data.X_train).tobytes())
    digest.update(np.ascontiguousarray(data.y_train).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- diagnostics


def coupling_symmetry(matrix: torch.Tensor) -> float:
    """(|J_s| - |J_a|) / (|J_s| + |J_a|) with J_s, J_a the (anti)symmetric parts of J.

    +1 for a symmetric J, -1 for an antisymmetric one, about 0 for i.i.d. entries.
    """
    # |J_s|^2 and |J_a|^2 are (|J|^2 +- <J, J^T>) / 2: accumulated over blocks of rows, so a
    # large J never needs float64 copies of itself or its transpose.
    square = cross = 0.0
    for start in range(0, matrix.shape[0], 1024):
        rows = matrix[start : start + 1024].double()
        cols = matrix[:, start : start + 1024].T.double()
        square += float((rows * rows).sum())
        cross += float((rows * cols).sum())
    sym, anti = math.sqrt(max(square + cross, 0) / 2), math.sqrt(max(square - cross, 0) / 2)
    return (sym - anti) / (sym + anti) if sym + anti > 0 else 0.0


@torch.no_grad()
def field_components(
    net: Network, x: torch.Tensor, y: torch.Tensor, cfg: LearningConfig
) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
    """Field components at the end of the free phase, per hidden module, and the states.

    internal: recurrent field (J s + J_D s + inter-module); input: W_in x; label: the
    feedback W_back label the clamped phase added to the last module.
    """
    # A private generator: measuring must not advance the training's random streams.
    drives, free = two_phase(net, x, y, cfg, torch.Generator().manual_seed(0))
    parts: list[dict[str, torch.Tensor]] = []
    for l in range(net.recurrent.n_layers):
        layer = {"internal": free.internal[l], "input": drives[l]}
        if l == net.recurrent.n_layers - 1:
            layer["label"] = net.label_field(y)
        parts.append(layer)
    return parts, free.states


def field_summary(
    parts: list[dict[str, torch.Tensor]], states: list[torch.Tensor]
) -> list[dict[str, dict[str, float]]]:
    """mean, std and aligned mean (mean of s_i h_i: its push towards stability) of each part."""
    return [
        {
            name: {"mean": float(h.mean()), "std": float(h.std()), "aligned": float((s * h).mean())}
            for name, h in layer.items()
        }
        for layer, s in zip(parts, states)
    ]


@dataclass
class EpochCounters:
    """Running sums over the batches of an epoch (tensors, so no per-batch device sync)."""

    seen: int = 0
    correct: float | torch.Tensor = 0.0
    unstable: float | torch.Tensor = 0.0  # unstable fraction times batch size
    converged: float | torch.Tensor = 0.0
    sweeps: float | torch.Tensor = 0.0
    train_time: float = 0.0

    def add(self, stats: StepStats) -> None:
        b = stats.batch_size
        self.seen += b
        self.correct = self.correct + stats.correct
        self.unstable = self.unstable + stats.unstable * b
        self.converged = self.converged + stats.converged
        self.sweeps = self.sweeps + stats.free_sweeps

    def to_state(self) -> dict[str, float]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}

    def fraction(self, name: str) -> float:
        return float(getattr(self, name)) / max(self.seen, 1)


# ---------------------------------------------------------------- stopping on Ctrl-C


class StopFlag:
    """Ctrl-C (SIGINT) asks the loop to stop at the next batch boundary; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():  # only there can it be set
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` CPU threads inside the block (None: leave torch's setting alone)."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------- the training loop


def train(
    config: RunConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    command: Sequence[str] | None = None,
    on_batch: Callable[[int, int], bool | None] | None = None,
) -> dict[str, Any]:
    """Train ``config`` into the run directory ``out_dir``; returns a summary dict.

    resume: continue the run in ``out_dir`` from its checkpoint (``config`` may differ from
        the saved one only in RESUMABLE_KEYS).
    on_batch: called as ``on_batch(epoch, batches_done)`` after every batch; returning True
        stops like Ctrl-C (a test hook).
    The summary's "status" is "completed" or "interrupted" (a checkpoint then holds the
    exact position).
    """
    out = Path(out_dir)
    dc, nc, lc, tc = config.data, config.network, config.learning, config.train
    device, dtype = resolve_device(tc.device), DTYPES[tc.dtype]

    # Everything a user can get wrong is checked before the run directory is touched.
    checkpoint = read_resume_point(out, config) if resume else check_new_run_dir(out)
    data = load_data(dc)
    fingerprint = _fingerprint(data)
    X = torch.from_numpy(data.X_train).to(device, dtype)
    y = torch.from_numpy(data.y_train).to(device)
    splits = {
        name: (torch.from_numpy(Xs).to(device, dtype), torch.from_numpy(ys).to(device))
        for name, Xs, ys in (("val", data.X_val, data.y_val), ("test", data.X_test, data.y_test))
    }
    probe = (X[: tc.probe_size], y[: tc.probe_size])
    n_train, batch_size = X.shape[0], tc.batch_size
    n_batches = math.ceil(n_train / batch_size)
    every = tc.checkpoint_every if isinstance(tc.checkpoint_every, int) else 0

    net = Network(nc, data.n_features, data.n_classes, seed=tc.seed, device=device, dtype=dtype)
    order_gen, dynamics_gen = _seeded_generators(tc.seed)
    metrics: list[dict[str, Any]] = []
    start_epoch, start_batch, perm = 0, 0, None
    counters, wall_offset = EpochCounters(), 0.0
    if checkpoint is not None:  # restore exactly what the interrupted run held
        state, tensors = checkpoint
        if state["data_fingerprint"] != fingerprint:
            raise RunError(
                f"The training data differ from those {out} was trained on (same "
                "config, other files?); the run cannot be resumed exactly."
            )
        weights = {
            k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")
        }
        check_tensors(net, weights, out / CHECKPOINT_FILE)
        net.load_state_dict(weights)
        order_gen.set_state(tensors["rng.order"])
        dynamics_gen.set_state(tensors["rng.dynamics"])
        perm = tensors.get("position.permutation")
        start_epoch, start_batch = state["epoch"], state["batch"]
        counters = EpochCounters(**state["counters"])
        metrics, wall_offset = state["metrics"], state["wall_time"]

    def save_position(epoch: int, batch: int, wall_time: float) -> None:
        """Checkpoint: weights, random streams, position in the epoch, metrics so far."""
        tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
        tensors["rng.order"] = order_gen.get_state()
        tensors["rng.dynamics"] = dynamics_gen.get_state()
        if perm is not None and batch > 0:
            tensors["position.permutation"] = perm
        state = {
            "epoch": epoch,
            "batch": batch,
            "counters": counters.to_state(),
            "metrics": metrics,
            "wall_time": wall_time,
            "data_fingerprint": fingerprint,
            "n_batches": n_batches,
        }
        save_checkpoint(out / CHECKPOINT_FILE, state, tensors)

    created = prepare_run_dir(out, config, resume=resume, command=command)
    started = time.perf_counter()
    try:
        with StopFlag() as stop, torch_threads(tc.threads):
            for epoch in range(start_epoch, tc.epochs):
                if perm is None:
                    perm = torch.randperm(n_train, generator=order_gen)
                order = perm.to(device)
                bar = _progress_bar(
                    progress, epoch, tc.epochs, n_train, min(start_batch * batch_size, n_train)
                )
                tick = time.perf_counter()
                for b in range(start_batch, n_batches):
                    idx = order[b * batch_size : (b + 1) * batch_size]
                    stats = learning_step(net, X[idx], y[idx], lc, generator=dynamics_gen)
                    counters.add(stats)
                    bar.update(stats.batch_size)
                    if b % 25 == 0:
                        bar.set_postfix(acc=f"{counters.fraction('correct'):.4f}", refresh=False)
                    if on_batch is not None and on_batch(epoch, b + 1):
                        stop.requested = True
                    if stop.requested or (every and (b + 1) % every == 0 and b + 1 < n_batches):
                        now = time.perf_counter()
                        counters.train_time += now - tick
                        tick = now
                        save_position(epoch, b + 1, wall_offset + now - started)
                        if stop.requested:
                            bar.close()
                            return _interrupted(out, epoch, b + 1, n_batches)
                counters.train_time += time.perf_counter() - tick
                bar.close()

                # End of epoch: evaluate (test is reported, never used to choose anything).
                results = {
                    name: evaluate(net, Xs, ys, lc, tc.eval_batch_size)
                    for name, (Xs, ys) in splits.items()
                    if len(Xs)
                }
                dynamics = results.get("val", results["test"])
                parts, probe_states = field_components(net, *probe, lc)
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "train_acc": counters.fraction("correct"),
                    "val_acc": results["val"]["accuracy"] if "val" in results else None,
                    "test_acc": results["test"]["accuracy"],
                    "unstable": counters.fraction("unstable"),
                    "converged": counters.fraction("converged"),
                    "free_sweeps": counters.fraction("sweeps"),
                    "eval_sweeps": dynamics["sweeps"],
                    "eval_converged": dynamics["converged"],
                    "symmetry": [coupling_symmetry(J.to_dense()) for J in net.recurrent.J],
                    "fields": field_summary(parts, probe_states),
                    "train_time": counters.train_time,
                    "samples_per_s": counters.seen / max(counters.train_time, 1e-9),
                    "wall_time": wall_offset + time.perf_counter() - started,
                }
                metrics.append(record)
                perm, start_batch, counters = None, 0, EpochCounters()
                save_position(epoch + 1, 0, record["wall_time"])
                write_jsonl(out / METRICS_FILE, metrics)
                if progress:
                    _log_epoch(record, tc.epochs)
                if stop.requested:
                    return _interrupted(out, epoch + 1, 0, n_batches)

        save_model(
            net,
            out / MODEL_STEM,
            seed=tc.seed,
            extra={"learning": to_dict(lc), "data": to_dict(dc)},
        )
        plot_learning_curves(out / CURVES_FILE, metrics)
        plot_field_histograms(out / FIELDS_FILE, field_components(net, *probe, lc)[0])
    except BaseException:
        # A new run that fails before its first checkpoint leaves nothing behind.
        if created is not None and not (out / CHECKPOINT_FILE).exists():
            _remove_new_run(out, created)
        raise
    return summarize(out, metrics, status="completed")


def _progress_bar(enabled: bool, epoch: int, epochs: int, total: int, initial: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=f"epoch {epoch + 1}/{epochs}",
        unit="sample",
        unit_scale=True,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
    )


def _log_epoch(record: dict[str, Any], epochs: int) -> None:
    from tqdm.auto import tqdm

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    tqdm.write(
        f"epoch {record['epoch']}/{epochs}: train {fmt(record['train_acc'])} "
        f"val {fmt(record['val_acc'])} test {fmt(record['test_acc'])} | unstable "
        f"{record['unstable']:.3f} converged {record['converged']:.3f} | "
        f"{record['samples_per_s']:.0f} samples/s, {record['wall_time']:.0f} s",
        file=sys.stderr,
    )


def _interrupted(out: Path, epoch: int, batch: int, n_batches: int) -> dict[str, Any]:
    position = {"epoch": epoch, "batch": batch, "n_batches": n_batches}
    return {"status": "interrupted", "run_dir": str(out), "position": position}


def summarize(out: Path, metrics: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """Final numbers of a run; the best epoch is chosen on validation, never on test."""
    last = metrics[-1] if metrics else {}
    scored = [m for m in metrics if m.get("val_acc") is not None]
    best = max(scored, key=lambda m: m["val_acc"]) if scored else None
    return {
        "status": status,
        "run_dir": str(out),
        "epochs": last.get("epoch", 0),
        "train_acc": last.get("train_acc"),
        "val_acc": last.get("val_acc"),
        "test_acc": last.get("test_acc"),
        "best_val_epoch": best["epoch"] if best else None,
        "best_val_acc": best["val_acc"] if best else None,
        "wall_time": last.get("wall_time"),
    }


# ---------------------------------------------------------------- the run directory


def check_new_run_dir(out: Path) -> None:
    """A new run needs an absent or empty directory: never mix two runs' files."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(
            f"Run directory {out} already exists and is not empty; choose another "
            f"--out, or continue that run with: darnn train --resume {out}"
        )


def read_resume_point(
    out: Path, config: RunConfig
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The verified checkpoint of run ``out``, after checking ``config`` may continue it."""
    if not (out / CONFIG_FILE).is_file() or not (out / CHECKPOINT_FILE).is_file():
        raise RunError(
            f"{out} is not a resumable run directory: it needs {CONFIG_FILE} and "
            f"{CHECKPOINT_FILE}, which a run writes after its first batch or epoch."
        )
    stored = RunConfig.from_dict(read_config_file(out / CONFIG_FILE))
    changed = [
        key for key, (old, new) in _flat_diff(stored, config).items() if key not in RESUMABLE_KEYS
    ]
    if changed:
        raise ConfigError(
            f"cannot change {', '.join(changed)} when resuming {out}; only "
            f"{', '.join(RESUMABLE_KEYS)} may differ from its {CONFIG_FILE}"
        )
    state, tensors = load_checkpoint(out / CHECKPOINT_FILE)
    if state["epoch"] > config.train.epochs or (
        state["epoch"] == config.train.epochs and state["batch"] > 0
    ):
        raise ConfigError(
            f"the checkpoint of {out} is already at epoch {state['epoch']}, past "
            f"train.epochs={config.train.epochs}"
        )
    return state, tensors


def _flat_diff(a: RunConfig, b: RunConfig) -> dict[str, tuple[Any, Any]]:
    da, db = a.to_dict(), b.to_dict()
    return {f"{s}.{k}": (da[s][k], db[s][k]) for s in da for k in da[s] if da[s][k] != db[s][k]}


def prepare_run_dir(
    out: Path, config: RunConfig, *, resume: bool, command: Sequence[str] | None
) -> bool | None:
    """Write config.yaml and meta.json. Returns, for a new run, whether the folder was created."""
    command = list(sys.argv if command is None else command)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if resume:
        try:
            meta = json.loads((out / META_FILE).read_text())
        except (OSError, ValueError):  # lost or damaged: the run itself is still resumable
            meta = {"note": f"{META_FILE} was unreadable when the run was resumed"}
        meta.setdefault("resumed", []).append({"time": now, "command": command})
        write_text(out / CONFIG_FILE, dump_config(config))
        write_json(out / META_FILE, meta)
        return None
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_text(out / CONFIG_FILE, dump_config(config))
        write_json(
            out / META_FILE,
            {
                "seed": config.train.seed,
                "versions": {
                    "darnn": __version__,
                    "torch": torch.__version__,
                    "numpy": np.__version__,
                    "python": platform.python_version(),
                },
                "platform": platform.platform(),
                "device": str(config.train.device),
                "command": command,
                "cwd": os.getcwd(),
                "start_time": now,
            },
        )
    except BaseException:
        _remove_new_run(out, created)
        raise
    return created


def _remove_new_run(out: Path, created: bool) -> None:
    """Undo a new run: the folder if this run created it, else only its contents."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in out.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def read_run_config(run_dir: str | os.PathLike[str]) -> RunConfig:
    """The resolved config saved in a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a darnn run directory (no {CONFIG_FILE}).")
    return RunConfig.from_dict(read_config_file(path))


__all__ = [
    "DEFAULT_LEARNING",
    "DEFAULT_NETWORK",
    "DEFAULT_TRAIN",
    "RESUMABLE_KEYS",
    "ConfigError",
    "DataConfig",
    "RunConfig",
    "RunError",
    "TrainConfig",
    "coupling_symmetry",
    "field_components",
    "load_data",
    "load_run_config",
    "read_run_config",
    "train",
]
