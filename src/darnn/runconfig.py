"""The run configuration: four validated sections, YAML files and ``section.key=value`` overrides.

A run is described by one YAML file with four sections: ``data`` (DataConfig), ``network``
(NetworkConfig), ``learning`` (LearningConfig) and ``train`` (TrainConfig), grouped in a
RunConfig. Whatever a file or override leaves out takes the value of the default recipe:
``RunConfig()`` holds the same numbers as configs/default.yaml (a test keeps them equal).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .checks import check_choice, check_count, short_repr
from .config import (
    EVAL_BATCH_SIZE,
    LearningConfig,
    NetworkConfig,
    check_compatible,
    from_dict,
    to_dict,
)
from .devices import DTYPES, check_device_name
from .errors import ConfigError

TRANSFORMS = ("entangled", "binarised")
# Settings that may change when a run is resumed: none changes what is learned (another
# device or thread count may still round differently).
RESUMABLE_KEYS = (
    "train.epochs",
    "train.device",
    "train.threads",
    "train.dist_timeout",
    "train.tensorboard",
    "train.eval_batch_size",
    "train.checkpoint_every",
    "data.data_dir",
    "data.download",
)


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
    # None, "entangled" or "binarised" (docs/model.md#input-transforms)
    transform: str | None = None
    transform_dim: int | None = None  # projection size (default 100 entangled, D binarised)
    transform_seed: int = 0  # seed of the fixed Gaussian projection
    # Feature preprocessing after the splits, in this order (docs/model.md#feature-sets):
    per_class: int | None = None  # keep at most this many training samples per class
    standardize: bool = False  # centre and scale by the training split's mean and std
    projection_dim: int | None = None  # Gaussian projection to this many features
    sign: bool = False  # sign of the (projected) features

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must name a dataset, e.g. fashion-mnist, digits, npz:PATH")
        if self.transform not in (None, *TRANSFORMS):
            raise ValueError(
                f"transform={short_repr(self.transform)} is not valid; accepted values: "
                f"null, {', '.join(TRANSFORMS)}"
            )
        if self.transform_dim is not None and (self.transform is None or self.transform_dim < 1):
            raise ValueError(
                f"transform_dim={short_repr(self.transform_dim)} is not valid; it needs a "
                "transform and must be >= 1"
            )
        for key in ("per_class", "projection_dim"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(
                    f"{key}={short_repr(value)} is not valid; it must be an integer >= 1 (or null)"
                )
        if self.transform is not None and (self.projection_dim is not None or self.sign):
            raise ValueError(
                f"transform={self.transform} already projects and takes the sign; use either "
                "transform or projection_dim/sign"
            )
        if self.limit_train is not None and self.limit_train < 1:
            raise ValueError(
                f"limit_train={short_repr(self.limit_train)} is not valid; it must be >= 1"
            )
        size = self.val_size
        if (isinstance(size, float) and not 0 <= size < 1) or (isinstance(size, int) and size < 0):
            raise ValueError(
                f"val_size={short_repr(size)} is not valid; give a fraction in [0, 1) or a "
                "count >= 0"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Epochs, batching, seed, device and checkpointing of a run."""

    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = EVAL_BATCH_SIZE
    seed: int = 0  # network init, epoch order, asynchronous dynamics
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    dtype: str = "float32"  # "float32" or "float64"
    checkpoint_every: int | str = "epoch"  # "epoch", or also every N batches within an epoch
    probe_size: int = 256  # fixed training samples on which field statistics are measured
    threads: int | None = None  # CPU threads (None: OMP_NUM_THREADS, else by work size)
    dist_timeout: float = 300.0  # seconds a torchrun rank waits for the others, then fails
    tensorboard: bool = False  # also write TensorBoard events to RUN_DIR/tensorboard

    def __post_init__(self) -> None:
        check_loop_params(self.epochs, self.batch_size, self.device, self.dtype, self.threads)
        check_count("eval_batch_size", self.eval_batch_size, minimum=1)
        check_count("probe_size", self.probe_size, minimum=1)
        check_count("seed", self.seed, minimum=0)
        if self.seed >= 2**63:  # torch's generators take a signed 64-bit seed
            raise ValueError(f"seed={self.seed:.3g} is not valid; it must be below 2**63")
        if not (isinstance(self.dist_timeout, (int, float)) and self.dist_timeout > 0):
            raise ValueError(
                f"dist_timeout={short_repr(self.dist_timeout)} is not valid; give seconds > 0"
            )
        every = self.checkpoint_every
        if every != "epoch" and not (isinstance(every, int) and every >= 1):
            raise ValueError(
                f"checkpoint_every={short_repr(every)} is not valid; give 'epoch' or a number of "
                "batches >= 1"
            )


def check_loop_params(
    epochs: int, batch_size: int, device: str, dtype: str, threads: int | None
) -> None:
    """The training loop's settings, for `TrainConfig` and `DARNClassifier` alike."""
    check_count("epochs", epochs, minimum=1)
    check_count("batch_size", batch_size, minimum=1)
    if threads is not None:
        check_count("threads", threads, minimum=1)
    check_device_name(device)
    check_choice("dtype", dtype, tuple(DTYPES))


# The default recipe's network (configs/default.yaml says where each number comes from):
# recipe A's rule, margins and rates (LearningConfig's defaults) on a wider sparse module
# with weaker label feedback, batches of 64 (TrainConfig's), measured to reach >= 0.85 test
# accuracy on Fashion-MNIST in under 10 minutes on a 2-core CPU. NetworkConfig's own
# defaults (one dense module of 1000 units) are the base a recipe file starts from.
DEFAULT_NETWORK = NetworkConfig(
    hidden=(6000,), j_density=0.01, w_in_density=0.1, w_back_strength=0.6
)
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
    learning: LearningConfig = field(default_factory=LearningConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        try:
            check_compatible(self.network, self.learning)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

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
        """The config as plain data, one dict per section (what a YAML file holds)."""
        return {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}


# The one default recipe: what ``darnn train`` runs without --config, configs/default.yaml,
# and the defaults of DARNClassifier (tests keep the three equal).
DEFAULT_RECIPE = RunConfig()


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
                f"keys to values, got {short_repr(keys)}"
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


# Values a YAML document may expand to, counting every alias as the copy it stands for:
# hand-written configs, bench files and spaces hold hundreds; an alias bomb (each level
# repeating the last ten times) reaches billions from a few lines.
MAX_YAML_VALUES = 100_000


def parse_yaml(text: str, origin: str) -> Any:
    """Plain data from YAML ``text``; ConfigError naming ``origin`` if invalid or too large."""
    try:
        data = yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} is not valid YAML: {exc}".replace("\n", " ")) from None
    sizes: dict[int, int] = {}
    if _expanded_size(data, sizes, set()) > MAX_YAML_VALUES:
        path, value = [], data
        while isinstance(value, dict) and value:  # down to the key that holds the bulk
            key = max(value, key=lambda k: sizes.get(id(value[k]), 1))
            path.append(str(key)[:80])
            value = value[key]
        where = f" in {'.'.join(path)}" if path else ""
        raise ConfigError(
            f"{origin}: the value{where} expands to more than {MAX_YAML_VALUES} values once "
            "its aliases (*name) are expanded (an alias bomb?); write the values out"
        )
    return data


def _expanded_size(value: Any, sizes: dict[int, int], open_: set[int]) -> int:
    """Values in ``value``, shared (aliased) parts counted once per use.

    In time proportional to the distinct parts; a self-referencing alias counts as too many.
    """
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key in sizes:
        return sizes[key]
    if key in open_:  # an anchor inside itself: infinitely large once expanded
        return MAX_YAML_VALUES + 1
    open_.add(key)
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    total = 1
    for item in items:
        total += _expanded_size(item, sizes, open_)
        if total > MAX_YAML_VALUES:
            break
    open_.discard(key)
    sizes[key] = total
    return total


def parse_override(item: str) -> dict[str, dict[str, Any]]:
    """``"section.key=value"`` (value parsed as YAML) as ``{section: {key: value}}``."""
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ConfigError(
            f"override {short_repr(item)} is not of the form section.key=value, e.g. "
            "train.epochs=3 or network.hidden=[800,800]"
        )
    return {section: {name: parse_yaml(raw, f"the value of override {short_repr(item)}")}}


def read_config_file(path: str | os.PathLike[str]) -> Any:
    """The plain data of a YAML config file; ConfigError if unreadable or invalid."""
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
        merged = merge_config(merged, parse_override(item), f"override {short_repr(item)}")
    merged = merge_config(merged, settings, "command-line options")
    return RunConfig.from_dict(merged)


def dump_config(config: RunConfig) -> str:
    """The config as YAML text, sections and keys in their order."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def config_digest(config: RunConfig) -> str:
    """SHA-256 of the resolved config: what a checkpoint was trained with."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()


def changed_keys(old: dict[str, dict[str, Any]], new: RunConfig) -> list[str]:
    """``section.key`` entries where ``new`` differs from the plain-data config ``old``.

    A key ``old`` lacks is an option added to darnn since ``old`` was written: it counts as
    unchanged while ``new`` holds its default (defaults keep earlier behaviour).
    """
    now = new.to_dict()
    defaults = {name: to_dict(cls()) for name, cls in _SECTIONS.items()}

    def was(s: str, k: str) -> Any:
        return old[s].get(k, defaults[s].get(k)) if isinstance(old.get(s), dict) else object()

    return sorted(f"{s}.{k}" for s in now for k in now[s] if was(s, k) != now[s][k])
