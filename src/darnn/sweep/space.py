"""The search space of a sweep: SPACE.yaml, checked against the run config before any work.

A space file maps dotted config keys (the ``section.key`` form of ``darnn train``
overrides) to a range or a list of choices::

    learning.lr_j: {low: 0.005, high: 0.5, log: true}   # float, sampled log-uniformly
    learning.free_sweeps: {low: 2, high: 10}            # an int key gives an int range
    learning.kappa_j: {low: 0.5, high: 3.0, step: 0.25} # a grid of floats
    network.hidden: {choices: [[1000], [500, 500]]}     # any YAML values

Whether a range is sampled as float or int follows the type of the config key, so
``{low: 1, high: 3}`` on ``learning.kappa_j`` is a float range. This module does not
import Optuna at import time: ``darnn`` works without the ``sweep`` extra.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import check_finite, check_positive
from ..config import from_dict
from ..runconfig import ConfigError, RunConfig, load_run_config, parse_yaml

SCALARS = (type(None), bool, int, float, str)


class SpaceError(ConfigError):
    """The search space names an unknown key or gives an invalid range; the message says which."""


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    key: str  # "section.key"
    kind: str  # "float", "int" or "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, stored in the study so that every worker checks it is the same."""
        if self.kind == "categorical":
            return {"choices": [json_value(c) for c in self.choices]}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    @property
    def encoded(self) -> bool:
        """Optuna's categorical choices must be scalars: lists travel as JSON strings."""
        return self.kind == "categorical" and not all(type(c) in SCALARS for c in self.choices)

    def distribution(self) -> Any:
        """The Optuna distribution of this parameter."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "float":
            low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
            return FloatDistribution(low, high, log=self.log, step=self.step)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=self.step or 1)
        choices = [json.dumps(c) for c in self.choices] if self.encoded else list(self.choices)
        return CategoricalDistribution(choices)

    def suggest(self, trial: Any) -> Any:
        """The config value an Optuna trial draws for this key."""
        if self.kind == "float":
            value = trial.suggest_float(
                self.key, float(self.low), float(self.high), log=self.log, step=self.step
            )
        elif self.kind == "int":
            value = trial.suggest_int(
                self.key, int(self.low), int(self.high), log=self.log, step=self.step or 1
            )
        else:
            value = trial.suggest_categorical(self.key, self.distribution().choices)
            if self.encoded:
                value = json.loads(value)
        return value


def json_value(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(value))


def config_fields() -> dict[str, dict[str, Any]]:
    """{section: {key: type annotation}} of every key a run config accepts."""
    sections = typing.get_type_hints(RunConfig)
    return {
        name: typing.get_type_hints(cls)
        for name, cls in sections.items()
        if dataclasses.is_dataclass(cls)
    }


def numeric_kinds(annotation: Any) -> set[str]:
    """Which ranges a config key of this type accepts: {"int"}, {"float"}, both or none."""
    origin = typing.get_origin(annotation)
    members = (
        typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    )
    kinds = set()
    for member in members:
        if member is int:
            kinds.add("int")
        elif member is float:
            kinds.add("float")
    return kinds


@dataclass(frozen=True)
class RangeEntry:
    """A range of a space file: ``{low, high}``, optionally ``log: true`` or a ``step``."""

    low: float | None = None  # an int key keeps int bounds (from_dict leaves ints as they are)
    high: float | None = None
    log: bool = False  # sampled log-uniformly
    step: float | None = None  # a grid

    def __post_init__(self) -> None:
        if self.low is None or self.high is None:
            raise ValueError("needs both low and high (or a list of choices)")
        check_finite("low", self.low)
        check_finite("high", self.high)
        if self.low > self.high:
            raise ValueError(f"low={self.low!r} is greater than high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got low={self.low!r}")
        if self.step is not None:
            check_positive("step", self.step)
            if self.log:
                raise ValueError("give either log: true or a step, not both")


@dataclass(frozen=True)
class ChoicesEntry:
    """A categorical dimension of a space file: ``{choices: [...]}``, any YAML values."""

    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError("choices must be a non-empty list")
        seen = [json.dumps(c, sort_keys=True) for c in self.choices]
        if len(set(seen)) != len(seen):
            raise ValueError(f"choices {list(self.choices)!r} repeat a value")


def parse_param(key: Any, spec: Any, fields: dict[str, dict[str, Any]], origin: str) -> Param:
    """One ``key: spec`` entry of a space file, with every check that needs no config values."""
    section, name = check_key(key, fields, origin)
    where = f"{origin}: '{key}'"
    if not isinstance(spec, dict):
        raise SpaceError(
            f"{where} must map to a range {{low: ..., high: ...}} (with optional log: true or "
            f"step: ...) or to {{choices: [...]}}, got {spec!r}"
        )
    try:
        if "choices" in spec:
            return Param(
                key, "categorical", choices=from_dict(ChoicesEntry, spec, section=key).choices
            )
        entry = from_dict(RangeEntry, spec, section=key)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        named = f"'{key}." in message  # from_dict's own messages name the key
        raise SpaceError(f"{origin}: {message}" if named else f"{where}: {message}") from None
    return range_param(key, entry, fields[section][name], where)


def check_key(key: Any, fields: dict[str, dict[str, Any]], origin: str) -> tuple[str, str]:
    """(section, name) of a ``section.key`` a run config accepts."""
    if not isinstance(key, str) or key.count(".") != 1:
        raise SpaceError(
            f"{origin}: {key!r} is not a config key of the form section.key, e.g. learning.lr_j"
        )
    section, name = key.split(".")
    if section not in fields:
        raise SpaceError(
            f"{origin}: unknown config section '{section}' in '{key}'; valid sections: "
            f"{', '.join(fields)}"
        )
    if name not in fields[section]:
        raise SpaceError(
            f"{origin}: unknown config key '{key}'; valid keys in section '{section}': "
            f"{', '.join(sorted(fields[section]))}"
        )
    return section, name


def range_param(key: str, entry: RangeEntry, annotation: Any, where: str) -> Param:
    """A range on a config key: an int range or a float range.

    An int range for an int key (or int bounds on an int-or-float key), else a float range.
    """
    kinds = numeric_kinds(annotation)
    if not kinds:
        raise SpaceError(
            f"{where} is not a number, so it cannot take a range; list the values to try "
            "as choices: [...]"
        )
    low, high, log, step = entry.low, entry.high, entry.log, entry.step
    bounds = (("low", low), ("high", high), ("step", step))
    if kinds == {"int"} or (
        kinds == {"int", "float"} and all(isinstance(v, int) for v in (low, high, step or 1))
    ):
        for label, value in bounds:
            if value is not None and not isinstance(value, int):
                raise SpaceError(f"{where} is an integer key; {label}={value!r} must be an integer")
        return Param(key, "int", low, high, log, step)
    return Param(key, "float", float(low), float(high), log, None if step is None else float(step))  # type: ignore[arg-type]


# The longest trial a sweep runs: a search explores many short runs (a budget of 10^8 epochs
# would run until killed); one long run is `darnn train`'s job.
MAX_TRIAL_EPOCHS = 1000


def check_budget(key: str, value: Any, origin: str) -> None:
    """SpaceError for a trial budget past MAX_TRIAL_EPOCHS."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and value > MAX_TRIAL_EPOCHS:
        raise SpaceError(
            f"{origin}: '{key}' allows {value:.3g} epochs per trial; a sweep's trials are "
            f"capped at {MAX_TRIAL_EPOCHS} epochs (train one long run with darnn train)"
        )


def check_against(params: list[Param], base: RunConfig, origin: str) -> None:
    """Every bound and choice must make a valid config on top of ``base``: errors name the key."""
    if "train.epochs" not in {p.key for p in params}:
        check_budget("train.epochs", base.train.epochs, f"{origin} on the base config")
    for p in params:
        section, name = p.key.split(".")
        values = p.choices if p.kind == "categorical" else (p.low, p.high)
        if p.key == "train.epochs":
            for value in values:
                check_budget(p.key, value, origin)
        labels = (
            [f"choice {c!r}" for c in p.choices]
            if p.kind == "categorical"
            else [f"low={p.low!r}", f"high={p.high!r}"]
        )
        for value, label in zip(values, labels):
            try:
                load_run_config(base=base, settings={section: {name: value}})
            except ConfigError as exc:
                raise SpaceError(f"{origin}: '{p.key}' {label} is not valid: {exc}") from None


def parse_space(mapping: Any, origin: str) -> list[Param]:
    """The parameters of a space given as plain data (a YAML document)."""
    if not isinstance(mapping, dict) or not mapping:
        raise SpaceError(
            f"{origin} must map config keys to ranges or choices, e.g. "
            "'learning.lr_j: {low: 0.005, high: 0.5, log: true}'; got "
            f"{type(mapping).__name__ if mapping else 'nothing'}"
        )
    fields = config_fields()
    return [parse_param(key, spec, fields, origin) for key, spec in mapping.items()]


def load_space(path: str | os.PathLike[str], base: RunConfig) -> list[Param]:
    """Read, parse and check the space file ``path`` against the base config."""
    origin = f"search space {path}"
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"cannot read search space file {path}: {exc}") from None
    params = parse_space(parse_yaml(text, origin), origin)
    check_against(params, base, origin)
    return params


def space_dict(params: list[Param]) -> dict[str, dict[str, Any]]:
    """The parameters as a space file writes them, by dotted key."""
    return {p.key: p.to_dict() for p in params}


def overrides(params: list[Param], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} for the sampled ``values`` ({dotted key: config value})."""
    out: dict[str, dict[str, Any]] = {}
    for p in params:
        if p.key in values:
            section, name = p.key.split(".")
            out.setdefault(section, {})[name] = values[p.key]
    return out


__all__ = [
    "Param",
    "SpaceError",
    "check_against",
    "config_fields",
    "load_space",
    "overrides",
    "parse_space",
    "space_dict",
]
