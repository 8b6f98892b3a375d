"""The bench file's schema: frozen, validated dataclasses read the way a run config is.

A bench file (configs/bench/DATASET.yaml) has the top-level keys of `BenchFile`, a
``quick`` section (`QuickSettings`) and one entry per method, whose ``kind`` picks its
schema: `DarnnEntry` (the default), `MlpEntry` or `PerceptronEntry`. Unknown keys, wrong
types and bad values give the messages a run config gives, prefixed with the file and the
method (``config.from_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..baselines import ACTIVATIONS
from ..checks import check_choice, check_count, check_positive, short_repr
from ..config import from_dict
from ..probe import REPRESENTATIONS
from ..runconfig import ConfigError, read_config_file

KINDS = ("darnn", "mlp", "perceptron", "probe")
MLP_SIZES = ("params", "width")
VARIANTS = ("random_features", "reservoir", "chain")
DEFAULT_LRS = (3e-4, 1e-3, 3e-3)
# Settings the bench fixes for every method; a method's overrides may not change them.
BENCH_KEYS = ("data.", "train.epochs", "train.seed", "network.hidden")


def check_optional_counts(settings: object, minimums: dict[str, int]) -> None:
    """`check_count` on each attribute of ``settings`` named in ``minimums`` that is set."""
    for name, minimum in minimums.items():
        value = getattr(settings, name)
        if value is not None:
            check_count(name, value, minimum=minimum)


@dataclass(frozen=True)
class QuickSettings:
    """The ``quick`` section: what ``--quick`` uses instead of the top level."""

    epochs: int | None = None
    seeds: int | None = None
    limit_train: int | None = None
    hidden: int | None = None  # total hidden units of every darnn method
    widths: tuple[int, ...] | None = None  # the widths a width scan runs at

    def __post_init__(self) -> None:
        check_optional_counts(self, {"epochs": 1, "seeds": 1, "limit_train": 1, "hidden": 2})
        check_widths(self.widths)


@dataclass(frozen=True)
class BenchFile:
    """A bench file: the data every method shares, epochs, seeds, width and the methods."""

    methods: dict[str, Any] = field(default_factory=dict)  # name -> entry (below)
    data: dict[str, Any] = field(default_factory=dict)  # a run config's data section
    epochs: int | None = None  # the same for every method
    seeds: int = 3  # seeds 0 .. seeds - 1
    hidden: int | None = None  # total hidden units of a darnn method without its own
    # A width scan: every method once per width (named NAME_hW), baselines matched per width.
    widths: tuple[int, ...] | None = None
    quick: QuickSettings | None = None

    def __post_init__(self) -> None:
        check_optional_counts(self, {"epochs": 1, "seeds": 1, "hidden": 2})
        check_widths(self.widths)
        if not self.methods:
            raise ValueError("methods must be a non-empty mapping of method names")


@dataclass(frozen=True)
class DarnnEntry:
    """A darnn method: a recipe from configs/ plus overrides, optionally a variant."""

    kind: str = "darnn"
    recipe: str = ""  # file name under configs/
    overrides: tuple[str, ...] = ()  # section.key=value, applied to the recipe in order
    variant: str | None = None  # random_features, reservoir or chain
    # One method per inter-module strength (lambda both ways): the chain variant's two
    # halves, or the recipe's own modules when it has several.
    lambdas: tuple[float, ...] | None = None
    hidden: int | None = None  # total hidden units (the bench's quick/--hidden still win)
    note: str = ""

    def __post_init__(self) -> None:
        for item in self.overrides:
            key = item.partition("=")[0].strip()
            if any(key == k or (k.endswith(".") and key.startswith(k)) for k in BENCH_KEYS):
                raise ValueError(
                    f"override {item!r} changes a setting the bench fixes for every method "
                    "(data.*, train.epochs, train.seed; the width through the 'hidden' key)"
                )
        if self.variant is not None:
            check_choice("variant", self.variant, VARIANTS)
        if self.variant == "chain" and self.lambdas is None:
            raise ValueError("variant: chain needs 'lambdas' (one method per strength)")
        if self.variant in ("random_features", "reservoir") and self.lambdas is not None:
            raise ValueError(f"'lambdas' cannot go with variant: {self.variant}")
        if self.lambdas is not None and not (self.lambdas and min(self.lambdas) >= 0):
            raise ValueError(
                f"lambdas={short_repr(list(self.lambdas))} must be a list of numbers >= 0"
            )
        check_optional_counts(self, {"hidden": 2})


@dataclass(frozen=True)
class MlpEntry:
    """A backprop MLP with as many parameters as the darnn method ``match``.

    Or, with ``size: width``, as many hidden units: the authors' baseline.
    """

    kind: str = "mlp"
    activation: str = ""  # relu or sign
    match: str = ""  # the darnn method whose trainable non-zeros (or width) it matches
    size: str = "params"  # "params" or "width"
    bias: bool = True
    lrs: tuple[float, ...] = DEFAULT_LRS  # tried on validation
    batch_size: int | None = None  # default: the matched recipe's
    note: str = ""

    def __post_init__(self) -> None:
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("size", self.size, MLP_SIZES)
        if not self.lrs:
            raise ValueError("lrs=[] must be a list of learning rates > 0")
        for i, lr in enumerate(self.lrs):
            check_positive(f"lrs[{i}]", lr)
        check_optional_counts(self, {"batch_size": 1})


@dataclass(frozen=True)
class PerceptronEntry:
    """A multiclass perceptron on the raw input."""

    kind: str = "perceptron"
    batch_size: int | None = None  # default 1
    note: str = ""

    def __post_init__(self) -> None:
        check_optional_counts(self, {"batch_size": 1})


@dataclass(frozen=True)
class ProbeEntry:
    """A bias-free linear probe (Adam, cross-entropy) on the states of darnn method ``of``.

    Its last module or all modules side by side (darnn.probe).
    """

    kind: str = "probe"
    of: str = ""  # the darnn method whose trained network it reads
    state: str = "last"  # "last" or "all"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 256
    note: str = ""

    def __post_init__(self) -> None:
        check_choice("state", self.state, REPRESENTATIONS)
        check_count("epochs", self.epochs, minimum=1)
        check_count("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)


ENTRIES: dict[str, type] = {
    "darnn": DarnnEntry,
    "mlp": MlpEntry,
    "perceptron": PerceptronEntry,
    "probe": ProbeEntry,
}


def check_widths(widths: tuple[int, ...] | None) -> None:
    """Raise ValueError unless ``widths`` is None or a list of distinct counts >= 1."""
    if widths is None:
        return
    if not widths or len(set(widths)) != len(widths):
        raise ValueError(f"widths={short_repr(list(widths))} must be a list of distinct widths")
    for i, w in enumerate(widths):
        check_count(f"widths[{i}]", w, minimum=1)


def read_bench_file(path: Path, where: str) -> BenchFile:
    """The validated bench file at ``path``; a ConfigError names the key or value."""
    spec = read_config_file(path)
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where} must be a mapping with keys {', '.join(BenchFile.__annotations__)}"
        )
    try:
        quick = spec.get("quick")
        if quick is not None:
            quick = from_dict(QuickSettings, _mapping(quick, "quick"), section="quick")
        methods = spec.get("methods")
        if isinstance(methods, dict):
            methods = {str(name): read_entry(str(name), e) for name, e in methods.items()}
        return from_dict(BenchFile, {**spec, "quick": quick, "methods": methods})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def read_entry(name: str, entry: Any) -> DarnnEntry | MlpEntry | PerceptronEntry | ProbeEntry:
    """The validated method ``name`` of a bench file, by its ``kind``."""
    section = f"methods.{name}"
    entry = _mapping({} if entry is None else entry, section)
    kind = entry.get("kind", "darnn")
    check_choice(f"{section}.kind", kind, KINDS)
    try:
        return from_dict(ENTRIES[kind], entry, section=section)
    except ValueError as exc:  # a __post_init__ message: say which method
        message = str(exc)
        raise ValueError(
            message if f"'{section}." in message else f"{section}: {message}"
        ) from None


def _mapping(value: Any, section: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(
            f"config section '{section}' must be a mapping of keys to values, got "
            f"{short_repr(value)}"
        )
    return value
