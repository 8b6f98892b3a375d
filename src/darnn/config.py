"""Plain, validated configuration dataclasses (every key: docs/model.md#config-keys).

`NetworkConfig` describes the architecture and initial scales, `LearningConfig` the
sweeps, margins, rates and decays of the two-phase local rule. Both validate in
``__post_init__`` so a bad value fails before any work is done, with a message that
names the field and the accepted values.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import operator
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .checks import (
    check_choice,
    check_count,
    check_density,
    check_finite,
    check_positive,
    is_real,
    short_repr,
)

SCHEDULES = ("synchronous", "sequential", "asynchronous")
# How the dynamics run on the CPU (darnn.fused): tensor operations, one compiled call per
# phase, or whichever is faster for the network.
KERNELS = ("auto", "torch", "fused")
INTER_KINDS = ("identity", "sparse", "gaussian")
LABEL_ENCODINGS = ("pm1", "rescaled", "halved")
READOUTS = ("perceptron", "neurons")
SPARSE_FORMATS = ("auto", "dense", "csr")
MARGIN_CONVENTIONS = ("total", "offdiag", "offdiag_lambda")
READOUT_STATES = ("free", "eval")
# Unit activations (docs/model.md#continuous-units) and learning rules
# (docs/model.md#contrastive-rules); the first of each is the default.
UNIT_ACTIVATIONS = ("sign", "tanh")
LEARNING_RULES = ("dynamical", "contrastive_difference", "contrastive_hebbian")
TANH_RULES = ("delta", "truncated")

# Samples relaxed at once when evaluating (memory ~ this times the widest module); one
# rule for `darnn train`, `darnn eval` and the estimator (TrainConfig.eval_batch_size).
EVAL_BATCH_SIZE = 1000
# Largest hidden module: sparse column indices are int32, and no machine holds more.
MAX_UNITS = 2**31 - 1
C = TypeVar("C")


def _plain_numbers(config: object) -> None:
    """Store numpy scalars of a frozen config as Python int / float.

    So every door (API, estimator, YAML) gives equal configs that serialise to YAML and JSON.
    """
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        if type(value) in (bool, int, float) or isinstance(value, bool):
            continue
        if isinstance(value, numbers.Integral):
            object.__setattr__(config, field.name, operator.index(value))
        elif isinstance(value, numbers.Real):  # numpy floats, even float64 (a float subclass)
            object.__setattr__(config, field.name, float(value))


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture and initial scales (docs/model.md#the-deep-network).

    The sizes of input and readout come from the data.

    Field defaults: recipe A's scales (docs/model.md#recipe-a) on one dense module of 1000
    units, the base a recipe file starts from. The default recipe (``darnn train``,
    ``DARNClassifier()``) is runconfig.DEFAULT_RECIPE: 6000 sparse units, weaker label
    feedback (configs/default.yaml). Every field is a key of a run config's ``network``
    section, described in docs/model.md#config-keys.

    Raises:
        ValueError: A field out of its range or of the wrong type; the message names it.
    """

    hidden: tuple[int, ...] = (1000,)  # N_l of each hidden module
    j_d: float = 0.95  # fixed self-coupling on the diagonal of every J_l
    j_strength: float = 1.0
    j_density: float = 1.0  # 1 - p_J
    w_in_strength: float = 5.0
    w_in_density: float = 1.0  # 1 - p_in
    input_to_all: bool = False  # W_in feeds every hidden module, not only the first
    # one-to-one lambda*I, sparse random positive ("excitatory"), or dense Gaussian
    inter: str = "identity"
    lambda_forward: float = 1.0  # l-1 -> l
    lambda_backward: float = 1.0  # l+1 -> l
    inter_fan_in: int = 1  # presynaptic partners per unit when inter="sparse"
    w_out_strength: float = 1.0
    w_back_strength: float = 1.3
    label_encoding: str = "rescaled"  # "rescaled": +1 -> sqrt(C-1)/2, -1 -> -1/sqrt(C-1)
    sparse_format: str = "auto"  # masked couplings stored dense, as CSR, or CSR when density <= 0.2
    # The authors' PyTorch protocol (docs/model.md#readout-neurons). "neurons": the readout is
    # a layer of +-1 units in the state, clamped to the label by a field label_strength * t;
    # the last module hears W_back times the readout's state, not the label itself.
    readout: str = "perceptron"
    label_strength: float = 1000.0  # lambda_y, the clamp on the readout neurons
    w_in_strengths: tuple[float, ...] = ()  # per fed module (input_to_all); () = w_in_strength
    w_back_skip: tuple[float, ...] = ()  # fixed readout -> module l, one per non-last module
    w_forth_skip: tuple[float, ...] = ()  # learned module l -> readout, one per non-last module
    symmetric_w_back: bool = False  # W_back (and its skips) re-tied to the readout's transpose
    # Hidden units: +-1 spins s = sign(h), or continuous s = tanh(h) in [-1, 1]
    # (docs/model.md#continuous-units).
    activation: str = "sign"

    def __post_init__(self) -> None:
        _plain_numbers(self)
        hidden = self.hidden
        if (
            not isinstance(hidden, (tuple, list))
            or len(hidden) == 0
            or not all(
                isinstance(n, numbers.Integral) and not isinstance(n, bool) and 1 <= n <= MAX_UNITS
                for n in hidden
            )
        ):
            raise ValueError(
                f"hidden={short_repr(hidden)} is not valid; give one positive integer size (at "
                f"most {MAX_UNITS}) per hidden module, e.g. (1600,) or (800, 800)"
            )
        object.__setattr__(self, "hidden", tuple(operator.index(n) for n in hidden))
        check_finite("j_d", self.j_d)
        for name in ("j_strength", "w_in_strength", "w_out_strength", "w_back_strength"):
            check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("lambda_forward", "lambda_backward"):
            check_positive(name, getattr(self, name), allow_zero=True)
        check_density("j_density", self.j_density)
        check_density("w_in_density", self.w_in_density)
        check_choice("inter", self.inter, INTER_KINDS)
        check_choice("label_encoding", self.label_encoding, LABEL_ENCODINGS)
        check_choice("sparse_format", self.sparse_format, SPARSE_FORMATS)
        check_count("inter_fan_in", self.inter_fan_in, minimum=1)
        self._check_readout_neurons()
        check_choice("activation", self.activation, UNIT_ACTIVATIONS)
        if self.activation == "tanh" and self.readout == "neurons":
            raise ValueError(
                "network.activation=tanh cannot be used with network.readout=neurons: the "
                "authors' readout-neuron protocol needs binary (+-1) units"
            )
        if self.inter == "sparse" and len(hidden) > 1 and self.inter_fan_in > min(hidden):
            raise ValueError(
                f"inter_fan_in={self.inter_fan_in} exceeds the smallest hidden module "
                f"({min(hidden)} units); use at most {min(hidden)}"
            )

    def _check_readout_neurons(self) -> None:
        """Options of the authors' protocol: lengths per module, and what needs neurons."""
        check_choice("readout", self.readout, READOUTS)
        check_positive("label_strength", self.label_strength, allow_zero=True)
        n = len(self.hidden)
        for name, expected, what in (
            ("w_in_strengths", n, "one per hidden module"),
            ("w_back_skip", n - 1, "one per hidden module but the last"),
            ("w_forth_skip", n - 1, "one per hidden module but the last"),
        ):
            values = getattr(self, name)
            if not isinstance(values, (tuple, list)):
                raise ValueError(
                    f"{name}={short_repr(values)} is not valid; give a list of numbers"
                )
            object.__setattr__(self, name, tuple(float(v) if is_real(v) else v for v in values))
            for i, v in enumerate(values):
                check_positive(f"{name}[{i}]", v, allow_zero=True)
            if values and len(values) != expected:
                raise ValueError(
                    f"{name}={short_repr(list(values))} is not valid for "
                    f"hidden={list(self.hidden)}: give {what} ({expected} values), or [] to "
                    "leave it out"
                )
        if self.w_in_strengths and not self.input_to_all:
            raise ValueError(
                "w_in_strengths needs input_to_all=true (per-module strengths are for an "
                "input that feeds every module)"
            )
        if self.readout == "neurons":
            return
        for name in ("w_back_skip", "w_forth_skip", "symmetric_w_back"):
            if getattr(self, name):
                raise ValueError(
                    f"{name}={short_repr(getattr(self, name))} needs readout='neurons' (the "
                    "authors' readout layer); with readout='perceptron' leave it at its default"
                )

    @property
    def input_strengths(self) -> tuple[float, ...]:
        """W_in strength of every module the input feeds."""
        fed = len(self.hidden) if self.input_to_all else 1
        return self.w_in_strengths or (self.w_in_strength,) * fed


@dataclass(frozen=True)
class LearningConfig:
    """Sweeps, margins, rates and decays of the two-phase local rule.

    Definitions: docs/model.md#the-learning-step, docs/model.md#the-local-rule and
    docs/model.md#margin-conventions.

    Update of a learned matrix W feeding unit i from presynaptic activity x:
    ``dW_ij = lr * s_i * 1[s_i h_i <= kappa] * x_j / (sqrt(B) * sqrt(fan_in))`` summed over
    the batch, then ``W *= 1 - decay``. ``fan_in`` is the expected number of non-zero
    inputs of a unit (n_in * density). With ``margin_convention="offdiag"`` (authors'
    PyTorch code) the hidden margins are measured on the field without the J_D s_i term,
    i.e. the effective threshold is kappa + J_D; with "total" (authors' JAX code) the
    field includes it and kappa is used as given. Every field is a key of a run config's
    ``learning`` section, described in docs/model.md#config-keys.

    Raises:
        ValueError: A field out of its range or of the wrong type; the message names it.
    """

    schedule: str = "synchronous"
    warmup_sweeps: int = 1
    clamped_sweeps: int = 5
    free_sweeps: int = 5
    eval_sweeps: int = 5
    margin_convention: str = "total"
    # Margin, rate and decay of each learned matrix: W_in, J, inter-module, readout.
    kappa_in: float = 1.78
    lr_in: float = 0.159
    decay_in: float = 0.0
    kappa_j: float = 1.78
    lr_j: float = 0.058
    decay_j: float = 0.0
    kappa_inter: float = 1.78
    lr_inter: float = 0.0
    decay_inter: float = 0.0
    learn_inter: bool = False  # inter-module forward couplings are fixed unless asked
    kappa_out: float = 7.0
    lr_out: float = 0.17
    decay_out: float = 0.0
    # State the readout rule learns from (docs/model.md#readout-state): "free" = s* after the
    # free phase;
    # "eval" = the label-free relaxation of the same batch, i.e. what prediction reads.
    readout_state: str = "free"
    # The authors' protocol (network.readout="neurons"; docs/model.md#readout-neurons).
    p_update: float = 1.0  # each unit takes its new sign with this probability per sweep
    double_dynamics: bool = False  # then as many sweeps with the feedback cut, label clamped
    double_update: bool = False  # J learns on the first fixed point, the readout on the second
    inference_backward: bool = True  # label-free sweeps keep the backward couplings (mode 4)
    lr_out_skip: float = 0.0  # rate of the learned module -> readout skips
    decay_out_skip: float = 0.0
    # Learning rule (docs/model.md#contrastive-rules): the paper's dynamical rule, or one of
    # two contrastive rules that compare a free and a clamped relaxation.
    rule: str = "dynamical"
    # Continuous units (network.activation=tanh; docs/model.md#continuous-units): J's rule,
    # the delta rule or the truncated perceptron rule, and its per-unit tolerance.
    tanh_rule: str = "delta"
    tanh_tolerance: float = 0.1
    # How the dynamics are computed (darnn.fused): equal results to float rounding.
    kernel: str = "auto"

    def __post_init__(self) -> None:
        _plain_numbers(self)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("kernel", self.kernel, KERNELS)
        check_choice("margin_convention", self.margin_convention, MARGIN_CONVENTIONS)
        check_choice("readout_state", self.readout_state, READOUT_STATES)
        check_choice("rule", self.rule, LEARNING_RULES)
        check_choice("tanh_rule", self.tanh_rule, TANH_RULES)
        check_positive("tanh_tolerance", self.tanh_tolerance, allow_zero=True)
        check_count("warmup_sweeps", self.warmup_sweeps, minimum=0)
        for name in ("clamped_sweeps", "free_sweeps", "eval_sweeps"):
            check_count(name, getattr(self, name), minimum=0)
        for name in ("kappa_in", "kappa_j", "kappa_inter", "kappa_out"):
            check_finite(name, getattr(self, name))
        for name in ("lr_in", "lr_j", "lr_inter", "lr_out", "lr_out_skip"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if not (is_real(self.p_update) and 0 < self.p_update <= 1):
            raise ValueError(
                f"p_update={short_repr(self.p_update)} is not valid; a probability of update must "
                "lie in (0, 1]"
            )
        if self.double_update and not self.double_dynamics:
            raise ValueError(
                "double_update=true needs double_dynamics=true: the update reads the fixed "
                "points of both halves of the double dynamics"
            )
        for name in ("decay_in", "decay_j", "decay_inter", "decay_out", "decay_out_skip"):
            value = getattr(self, name)
            if not (is_real(value) and 0 <= value < 1):
                raise ValueError(
                    f"{name}={short_repr(value)} is not valid; a decay must lie in [0, 1)"
                )


def check_compatible(network: NetworkConfig, learning: LearningConfig) -> None:
    """Refuse learning options that the network cannot run (messages name both keys)."""
    _check_rule(network, learning)
    if network.readout != "neurons":
        neurons_only = {
            "p_update": learning.p_update != 1.0,
            "double_dynamics": learning.double_dynamics,
            "inference_backward": not learning.inference_backward,
            "lr_out_skip": learning.lr_out_skip != 0.0,
        }
        for name, used in neurons_only.items():
            if used:
                raise ValueError(
                    f"learning.{name}={short_repr(getattr(learning, name))} needs "
                    "network.readout=neurons (the authors' protocol); with "
                    "network.readout=perceptron leave it at its default"
                )
        return
    if learning.schedule != "synchronous":
        raise ValueError(
            f"learning.schedule={learning.schedule!r} cannot run network.readout=neurons: the "
            "authors' protocol updates every layer and the readout at once (synchronous)"
        )
    if learning.readout_state != "free":
        raise ValueError(
            "learning.readout_state=eval cannot be used with network.readout=neurons: the "
            "readout neurons learn from their own clamped state"
        )


def _check_rule(network: NetworkConfig, learning: LearningConfig) -> None:
    """Combinations of learning.rule and network.activation that cannot run."""
    defaults = LearningConfig()
    if network.activation == "tanh":
        if learning.schedule == "asynchronous":
            raise ValueError(
                "learning.schedule=asynchronous cannot run network.activation=tanh: the "
                "asynchronous schedule flips binary units one at a time; use synchronous or "
                "sequential"
            )
    else:
        for name in ("tanh_rule", "tanh_tolerance"):
            if getattr(learning, name) != getattr(defaults, name):
                raise ValueError(
                    f"learning.{name}={short_repr(getattr(learning, name))} needs "
                    "network.activation=tanh (continuous units); with network.activation=sign "
                    "leave it at its default"
                )
    if learning.rule == "dynamical":
        return
    if learning.clamped_sweeps == 0:
        raise ValueError(
            f"learning.rule={learning.rule} needs learning.clamped_sweeps >= 1: a contrastive "
            "rule compares the free state with the clamped one, and with 0 clamped sweeps "
            "there is no clamped state"
        )
    if network.readout == "neurons":
        raise ValueError(
            f"learning.rule={learning.rule} cannot be used with network.readout=neurons: the "
            "authors' readout-neuron protocol has its own step; use network.readout=perceptron"
        )
    if learning.readout_state != "free":
        raise ValueError(
            f"learning.readout_state={learning.readout_state} cannot be used with "
            f"learning.rule={learning.rule}: the contrastive rules' readout learns from the "
            "free and clamped states; leave learning.readout_state at free"
        )


def _type_ok(value: Any, annotation: Any) -> bool:
    """Does ``value`` (parsed from YAML/TOML/CLI) fit the dataclass field annotation?"""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is tuple:
        (item, *_rest) = typing.get_args(annotation)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def from_dict(cls: type[C], values: dict[str, Any], *, section: str = "") -> C:
    """Build a config dataclass from a plain mapping; unknown keys and wrong types name the key."""
    prefix = f"{section}." if section else ""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in values.items():
        if key not in known:
            raise ValueError(
                f"unknown config key '{prefix}{_key_text(key)}'; "
                f"valid keys in this section: {', '.join(sorted(known))}"
            )
        if not _type_ok(value, hints[key]):
            raise TypeError(
                f"config key '{prefix}{key}' has value {short_repr(value)} of type "
                f"{type(value).__name__}; expected {_type_name(hints[key])}"
            )
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def _key_text(key: object) -> str:
    """A mapping key as the message shows it: a short string as is, anything else cut."""
    return key if isinstance(key, str) and len(key) <= 80 else short_repr(key, 80)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        return f"a list of {_type_name(typing.get_args(annotation)[0])}"
    if typing.get_origin(annotation) is dict:
        return "a mapping"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (tuples become lists for YAML/JSON)."""
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def keywords_for(
    function: Callable[..., Any], values: Mapping[str, Any], **given: Any
) -> dict[str, Any]:
    """The ``values`` named like parameters of ``function``, then ``given`` (which win).

    A config's fields or a command's options, passed through under their own names.
    """
    names = inspect.signature(function).parameters
    return {**{k: v for k, v in values.items() if k in names}, **given}


__all__ = [
    "EVAL_BATCH_SIZE",
    "INTER_KINDS",
    "LABEL_ENCODINGS",
    "LEARNING_RULES",
    "MARGIN_CONVENTIONS",
    "MAX_UNITS",
    "READOUTS",
    "READOUT_STATES",
    "SCHEDULES",
    "SPARSE_FORMATS",
    "TANH_RULES",
    "UNIT_ACTIVATIONS",
    "LearningConfig",
    "NetworkConfig",
    "check_compatible",
    "from_dict",
    "keywords_for",
    "to_dict",
]
