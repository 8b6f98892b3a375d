"""What each method of ``darnn bench`` is: the bench file, its methods, their resolved configs.

A bench file (configs/bench/DATASET.yaml) names the data (one ``data`` section shared by
every method, so every method sees the same splits), the epochs (the same for every
method), the seeds, and the methods. A darnn method is a recipe from configs/ (by file
name) plus ``section.key=value`` overrides and optionally a variant; the bench never holds
a copy of a recipe. Variants:

- ``random_features``: learning and recurrence off (J = 0, no label field, W_in and J
  frozen): s = sign(W_in x) and only the readout learns, by the recipe's own rule;
- ``reservoir``: W_in and J frozen, no label field: the dynamics run, only the readout learns;
- ``chain``: the recipe's single module split into two equal modules joined one-to-one
  with strength ``lambda`` both ways, one method per value of ``lambdas``.

A darnn entry with ``lambdas`` and no variant scans the inter-module strength of a recipe
that has several modules (one method per value, lambda both ways).

The baselines are ``mlp`` (one hidden layer, ReLU or sign, as many parameters as the
darnn method named by ``match``, or with ``size: width`` as many hidden units; Adam,
learning rate chosen on validation), ``perceptron`` (multiclass, on the raw input) and
``probe`` (a bias-free linear map trained on the states of the darnn method named by
``of``). A file with ``widths`` runs every method once per width (named NAME_hW), each
baseline matched to the darnn method of its own width.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import shipped
from ..checks import short_repr
from ..runconfig import ConfigError, DataConfig, RunConfig, load_run_config
from .spec import BenchFile, DarnnEntry, MlpEntry, PerceptronEntry, ProbeEntry, read_bench_file

# Learning off: no recurrence (J = 0), no label field, W_in and J frozen (and not decayed).
FROZEN = (
    "network.w_back_strength=0",
    "learning.lr_in=0",
    "learning.lr_j=0",
    "learning.decay_in=0",
    "learning.decay_j=0",
    "learning.learn_inter=false",
)
VARIANT_OVERRIDES = {
    "random_features": ("network.j_strength=0", *FROZEN),
    "reservoir": FROZEN,
}
NOTES = {
    "random_features": "learning off: s = sign(W_in x), readout by the same rule",
    "reservoir": "W_in and J frozen, no label field: dynamics on, readout learns",
}


@dataclass(frozen=True)
class Method:
    """One row of the bench: a darnn run config, or a baseline and its settings."""

    name: str
    kind: str  # "darnn", "mlp", "perceptron" or "probe"
    group: str  # the bench file's entry (a chain's lambda values share it)
    note: str = ""
    config: RunConfig | None = None  # darnn: everything but train.seed
    recipe: str | None = None  # darnn: file name under configs/
    overrides: tuple[str, ...] = ()  # darnn: applied to the recipe, in order
    lam: float | None = None  # a lambda scan: the inter-module strength
    width: int | None = None  # a width scan: the width of this row
    activation: str | None = None  # mlp
    match: str | None = None  # mlp: the darnn method whose trainable non-zeros it matches
    size: str | None = None  # mlp: match the "params" or the "width"
    bias: bool | None = None  # mlp
    lrs: tuple[float, ...] = ()  # mlp: learning rates tried on validation
    batch_size: int = 1  # mlp, perceptron, probe
    of: str | None = None  # probe: the darnn method whose states it reads
    state: str | None = None  # probe: "last" or "all"
    epochs: int | None = None  # probe: its own epochs (the network's are the bench's)
    lr: float | None = None  # probe

    def to_dict(self) -> dict[str, Any]:
        """The method as plain data for results.json (its config resolved)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, (), "")}
        out.pop("config", None)
        if self.kind == "darnn":
            out.pop("batch_size")  # the recipe's train.batch_size applies
        if self.config is not None:
            out["config"] = self.config.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class Plan:
    """Everything a bench run does, resolved and validated before any work."""

    dataset: str
    bench_file: Path
    configs_dir: Path
    quick: bool
    seeds: tuple[int, ...]
    epochs: int
    data: DataConfig
    methods: tuple[Method, ...]  # the selected methods, in file order
    all_methods: tuple[Method, ...] = field(default=(), repr=False)  # an mlp's match may be
    # outside the selection

    def method(self, name: str) -> Method:
        """The method called ``name``."""
        return next(m for m in self.all_methods if m.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (what config.yaml of a bench records)."""
        return {
            "dataset": self.dataset,
            "bench_file": str(self.bench_file),
            "quick": self.quick,
            "seeds": list(self.seeds),
            "epochs": self.epochs,
            "data": dataclasses.asdict(self.data),
            "methods": [m.to_dict() for m in self.methods],
        }

    def train_command(self, method: Method, seed: int) -> str:
        """The ``darnn train`` command that reproduces one darnn run of the bench."""
        assert method.config is not None and method.recipe is not None
        recipe = recipe_path(self.configs_dir, method.recipe)
        base = load_run_config(recipe, method.overrides).to_dict()
        final = method.config.to_dict()
        bench = [  # what the bench sets on top of the recipe: data, device
            override(f"{section}.{key}", value)
            for section in ("data", "train")
            for key, value in final[section].items()
            if base[section][key] != value and key not in ("epochs", "seed")
        ]
        try:
            shown_path = str(recipe.relative_to(Path.cwd()))
        except ValueError:
            shown_path = str(recipe)
        args = ["darnn", "train", "--config", shown_path, *bench, *method.overrides]
        return shlex.join([*args, f"train.epochs={self.epochs}", f"train.seed={seed}"])


def override(key: str, value: Any) -> str:
    """``key=value`` with value written as YAML on one line (what parse_override reads)."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{key}={text.removesuffix('...').strip()}"


# ---------------------------------------------------------------- finding bench files


def available_datasets() -> list[str]:
    """The bench files that ship with darnn (package data; configs/bench in a checkout)."""
    return shipped.names("bench")


def recipe_path(configs_dir: Path, recipe: str) -> Path:
    """The file a bench file's ``recipe`` names.

    The file beside its configs folder (configs/NAME for configs/bench/X.yaml), else the
    shipped recipe of that name (a bench file of your own, anywhere, can use them), else the
    first path (missing: the caller says so).
    """
    path = configs_dir / recipe
    if path.is_file():
        return path
    try:
        return shipped.find_shipped("recipe", recipe)
    except ConfigError:
        return path


def find_bench_file(dataset: str) -> Path:
    """A bench file path, or NAME: ./configs/bench/NAME.yaml, else the shipped NAME."""
    return shipped.find("bench", dataset)


# ---------------------------------------------------------------- resolving a bench file


def load_plan(
    dataset: str,
    *,
    quick: bool = False,
    seeds: int | None = None,
    epochs: int | None = None,
    limit_train: int | None = None,
    hidden: int | None = None,
    methods: Sequence[str] | None = None,
    data_dir: str | None = None,
    device: str | None = None,
) -> Plan:
    """Read configs/bench/DATASET.yaml and resolve every method.

    Command-line values win over the ``quick`` section, which wins over the file's top
    level.
    """
    path = find_bench_file(dataset)
    where = f"bench file {path}"
    spec = read_bench_file(path, where)
    level = spec.quick if quick else None

    def setting(name: str, cli: Any) -> Any:
        quick_value = None if level is None else getattr(level, name)
        return next(
            (v for v in (cli, quick_value, getattr(spec, name, None)) if v is not None), None
        )

    n_epochs, n_seeds = setting("epochs", epochs), setting("seeds", seeds)
    if n_epochs is None:
        raise ConfigError(f"{where}: epochs=None is not valid; give an integer >= 1")
    data = bench_data(spec, where, setting("limit_train", limit_train), data_dir)
    forced = hidden if hidden is not None else (level and level.hidden)  # beats a method's own
    context = Context(where, path.parent.parent, n_epochs, data, forced, spec.hidden, device)
    resolved: list[Method] = []
    # A width scan runs at the file's (or quick) widths; --hidden picks one width instead.
    widths = None if spec.widths is None else setting("widths", hidden and (hidden,))
    for width in widths or (None,):
        scan = context if width is None else dataclasses.replace(context, forced_hidden=width)
        for name, entry in spec.methods.items():
            if width is not None and isinstance(entry, PerceptronEntry) and width != widths[0]:
                continue  # no width: it runs once
            resolved.extend(at_width(m, width) for m in resolve_method(name, entry, scan))
    names = [m.name for m in resolved]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            f"{where}: method name(s) {', '.join(twice)} occur twice (after expanding lambdas)"
        )
    resolved = [match_baseline(m, resolved, where) for m in resolved]
    return Plan(
        dataset=dataset,
        bench_file=path,
        configs_dir=context.configs_dir,
        quick=quick,
        seeds=tuple(range(n_seeds)),
        epochs=n_epochs,
        data=data,
        methods=tuple(select(resolved, methods, where)),
        all_methods=tuple(resolved),
    )


def bench_data(
    spec: BenchFile, where: str, limit_train: int | None, data_dir: str | None
) -> DataConfig:
    """The data section every method shares, with the command line's values on top."""
    settings = dict(spec.data)
    if limit_train is not None:
        settings["limit_train"] = limit_train
    if data_dir is not None:
        settings["data_dir"] = data_dir
    try:
        data = RunConfig.from_dict({"data": settings}).data
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if data.val_size in (0, 0.0):
        raise ConfigError(
            f"{where}: data.val_size must be > 0: the bench tunes and selects on the "
            "validation split only"
        )
    return data


def at_width(m: Method, width: int | None) -> Method:
    """A method of a width scan: named NAME_hW, its match / of the darnn method of width W."""
    if width is None or m.kind == "perceptron":
        return m
    return dataclasses.replace(
        m,
        name=f"{m.name}_h{width}",
        width=width,
        match=None if m.match is None else f"{m.match}_h{width}",
        of=None if m.of is None else f"{m.of}_h{width}",
    )


def match_baseline(m: Method, methods: list[Method], where: str) -> Method:
    """An mlp or probe with the darnn method it refers to checked.

    An mlp's batch size is filled in.
    """
    if m.kind not in ("mlp", "probe"):
        return m
    key, ref = ("match", m.match) if m.kind == "mlp" else ("of", m.of)
    target = next((t for t in methods if t.name == ref), None)
    if target is None or target.config is None:
        darnn_names = [t.name for t in methods if t.kind == "darnn"]
        raise ConfigError(
            f"{where}: method {m.name!r} has {key}={short_repr(ref)}, which is not a darnn "
            f"method of this file; choose one of: {', '.join(darnn_names)}"
        )
    if m.kind == "probe":
        return m
    return dataclasses.replace(m, batch_size=m.batch_size or target.config.train.batch_size)


def select(methods: list[Method], wanted: Sequence[str] | None, where: str) -> list[Method]:
    """The methods named in ``wanted`` (method or group names), in file order."""
    if wanted is None:
        return methods
    known = {m.name for m in methods} | {m.group for m in methods}
    bad = [w for w in wanted if w not in known]
    if bad or not wanted:
        raise ConfigError(
            f"unknown method(s) {', '.join(map(repr, bad)) or '(none given)'} for {where}; "
            f"valid methods: {', '.join(sorted(known))}"
        )
    chosen = [m for m in methods if m.name in wanted or m.group in wanted]
    needed = {m.of for m in chosen if m.kind == "probe"}  # a probe reads a trained network
    return [m for m in methods if m in chosen or m.name in needed]


@dataclass(frozen=True)
class Context:
    """What every method of a bench file shares."""

    where: str
    configs_dir: Path
    epochs: int
    data: DataConfig
    forced_hidden: int | None  # total hidden units of every darnn method (quick, --hidden)
    hidden: int | None  # the file's top-level width, for methods without their own
    device: str | None


def resolve_method(
    name: str, entry: DarnnEntry | MlpEntry | PerceptronEntry | ProbeEntry, ctx: Context
) -> list[Method]:
    """The bench rows one entry of the file stands for (a lambda scan: one per lambda)."""
    if isinstance(entry, PerceptronEntry):
        return [Method(name, "perceptron", name, note=entry.note, batch_size=entry.batch_size or 1)]
    if isinstance(entry, ProbeEntry):
        note = entry.note or f"linear probe on the {entry.state} states of {entry.of}"
        return [
            Method(
                name,
                "probe",
                name,
                note=note,
                of=entry.of,
                state=entry.state,
                epochs=entry.epochs,
                lr=entry.lr,
                batch_size=entry.batch_size,
            )
        ]
    if isinstance(entry, MlpEntry):
        # batch_size 0 stands for "the matched recipe's" (match_baseline fills it in)
        return [
            Method(
                name,
                "mlp",
                name,
                note=entry.note,
                activation=entry.activation,
                match=entry.match,
                size=entry.size,
                bias=entry.bias,
                lrs=entry.lrs,
                batch_size=entry.batch_size or 0,
            )
        ]
    return DarnnMethods(name, entry, ctx).resolve()


class DarnnMethods:
    """The darnn rows of one entry.

    Its recipe with the entry's overrides, at the bench's width, data and epochs, as itself,
    a variant, or one two-module chain per lambda.
    """

    def __init__(self, name: str, entry: DarnnEntry, ctx: Context) -> None:
        self.name, self.entry, self.ctx = name, entry, ctx
        self.where = f"{ctx.where}, method {name!r}"
        self.recipe = recipe_path(ctx.configs_dir, entry.recipe)
        if not self.recipe.is_file():
            raise ConfigError(
                f"{self.where}: recipe={short_repr(entry.recipe)} must name a recipe file in "
                f"{ctx.configs_dir} or a shipped recipe (e.g. recipe: default.yaml; darnn "
                "recipes lists them)"
            )
        self.settings: dict[str, dict[str, Any]] = {
            "data": dataclasses.asdict(ctx.data),
            "train": {"epochs": ctx.epochs},
        }
        if ctx.device is not None:
            self.settings["train"]["device"] = ctx.device

    def build(self, extra: Sequence[str]) -> RunConfig:
        """The entry's config with ``extra`` overrides; ConfigError naming the entry."""
        try:
            overrides = [*self.entry.overrides, *extra]
            return load_run_config(self.recipe, overrides, settings=self.settings)
        except ConfigError as exc:
            raise ConfigError(f"{self.where}: {exc}") from None

    def method(self, name: str, note: str, extra: Sequence[str], lam: float | None) -> Method:
        """One darnn method of this entry, its config built with ``extra``."""
        return Method(
            name,
            "darnn",
            self.name,
            note=self.entry.note or note,
            config=self.build(extra),
            recipe=self.entry.recipe,
            overrides=(*self.entry.overrides, *extra),
            lam=lam,
        )

    def sizing(self) -> tuple[tuple[int, ...], list[str]]:
        """The hidden sizes and the overrides that set them.

        The recipe's own, or the bench's width split equally over the recipe's modules.
        """
        ctx, layers = self.ctx, self.build([]).network.hidden
        candidates = (ctx.forced_hidden, self.entry.hidden, ctx.hidden)
        width = next((w for w in candidates if w is not None), None)
        if width is None:
            return layers, []
        if width % len(layers):
            raise ConfigError(
                f"{self.where}: hidden={width} cannot be split equally over the recipe's "
                f"{len(layers)} modules"
            )
        layers = (width // len(layers),) * len(layers)
        return layers, [override("network.hidden", list(layers))]

    def resolve(self) -> list[Method]:
        """The entry's methods: itself, a variant, a chain per lambda, or a lambda scan."""
        variant, (layers, sizing) = self.entry.variant, self.sizing()
        if variant is None and self.entry.lambdas is not None:
            return self.scan(layers, sizing)
        if variant != "chain":
            extra = [*sizing, *VARIANT_OVERRIDES.get(variant or "", ())]
            return [self.method(self.name, NOTES.get(variant or "", ""), extra, None)]
        if len(layers) != 1 or layers[0] % 2:
            raise ConfigError(
                f"{self.where}: variant chain splits one hidden module into two equal halves; "
                f"the recipe's hidden={list(layers)} is not one module of an even size"
            )
        half = layers[0] // 2
        return [
            self.method(
                f"{self.name}_lambda{lam:g}",
                f"two modules of {half}, lambda = {lam:g}",
                [
                    override("network.hidden", [half, half]),
                    f"network.lambda_forward={lam}",
                    f"network.lambda_backward={lam}",
                ],
                float(lam),
            )
            for lam in self.entry.lambdas or ()
        ]

    def scan(self, layers: tuple[int, ...], sizing: list[str]) -> list[Method]:
        """The recipe's own modules, one method per inter-module strength."""
        if len(layers) < 2:
            raise ConfigError(
                f"{self.where}: 'lambdas' without a variant scans the strength between the "
                f"recipe's modules, but hidden={list(layers)} is one module; use "
                "variant: chain to split it"
            )
        return [
            self.method(
                f"{self.name}_lambda{lam:g}",
                f"{len(layers)} modules of {layers[0]}, lambda = {lam:g}",
                [*sizing, f"network.lambda_forward={lam}", f"network.lambda_backward={lam}"],
                float(lam),
            )
            for lam in self.entry.lambdas or ()
        ]
