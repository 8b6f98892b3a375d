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

The baselines are ``mlp`` (one hidden layer, ReLU or sign, as many parameters as the
darnn method named by ``match``; Adam, learning rate chosen on validation) and
``perceptron`` (multiclass, on the raw input).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import shown
from ..runconfig import ConfigError, DataConfig, RunConfig, load_run_config, read_config_file

KINDS = ("darnn", "mlp", "perceptron")
VARIANTS = ("random_features", "reservoir", "chain")
ACTIVATIONS = ("relu", "sign")  # darnn.baselines.ACTIVATIONS (not imported: it loads torch)
DEFAULT_LRS = (3e-4, 1e-3, 3e-3)
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
# Settings the bench fixes for every method; a method's overrides may not change them.
BENCH_KEYS = ("data.", "train.epochs", "train.seed", "network.hidden")
BENCH_TOP_KEYS = {"data", "epochs", "seeds", "hidden", "quick", "methods"}
QUICK_KEYS = {"epochs", "seeds", "limit_train", "hidden"}
METHOD_KEYS = {
    "darnn": {"kind", "recipe", "overrides", "variant", "lambdas", "hidden", "note"},
    "mlp": {"kind", "activation", "match", "lrs", "batch_size", "note"},
    "perceptron": {"kind", "batch_size", "note"},
}
NOTES = {
    "random_features": "learning off: s = sign(W_in x), readout by the same rule",
    "reservoir": "W_in and J frozen, no label field: dynamics on, readout learns",
}


@dataclass(frozen=True)
class Method:
    """One row of the bench: a darnn run config, or a baseline and its settings."""

    name: str
    kind: str  # "darnn", "mlp" or "perceptron"
    group: str  # the bench file's entry (a chain's lambda values share it)
    note: str = ""
    config: RunConfig | None = None  # darnn: everything but train.seed
    recipe: str | None = None  # darnn: file name under configs/
    overrides: tuple[str, ...] = ()  # darnn: applied to the recipe, in order
    lam: float | None = None  # chain variant: the inter-module strength
    activation: str | None = None  # mlp
    match: str | None = None  # mlp: the darnn method whose trainable non-zeros it matches
    lrs: tuple[float, ...] = ()  # mlp: learning rates tried on validation
    batch_size: int = 1  # mlp, perceptron

    def to_dict(self) -> dict[str, Any]:
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
        return next(m for m in self.all_methods if m.name == name)

    def to_dict(self) -> dict[str, Any]:
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
        recipe = self.configs_dir / method.recipe
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


def bench_dirs() -> list[Path]:
    """Where bench files are looked for: ./configs/bench, then this checkout's."""
    here = Path.cwd() / "configs" / "bench"
    checkout = Path(__file__).resolve().parents[3] / "configs" / "bench"
    return [here] if here.resolve() == checkout else [here, checkout]


def available_datasets() -> list[str]:
    names = {p.stem for d in bench_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def find_bench_file(dataset: str) -> Path:
    if dataset and "/" not in dataset and not dataset.startswith("."):
        for folder in bench_dirs():
            path = folder / f"{dataset}.yaml"
            if path.is_file():
                return path
    names = available_datasets()
    raise ConfigError(
        f"unknown bench dataset {shown(dataset)}: there is no configs/bench/{dataset}.yaml "
        f"(looked in {', '.join(str(d) for d in bench_dirs())}). Available: "
        f"{', '.join(names) if names else 'none'}. Add a bench file there to define one."
    )


# ---------------------------------------------------------------- reading a bench file


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
    """Read configs/bench/DATASET.yaml and resolve every method (command-line values win
    over the ``quick`` section, which wins over the file's top level)."""
    path = find_bench_file(dataset)
    spec = read_config_file(path)
    where = f"bench file {path}"
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where} must be a mapping with keys {', '.join(sorted(BENCH_TOP_KEYS))}"
        )
    unknown = set(spec) - BENCH_TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; valid keys: "
            f"{', '.join(sorted(BENCH_TOP_KEYS))}"
        )
    quick_spec = spec.get("quick") or {}
    if not isinstance(quick_spec, dict) or set(quick_spec) - QUICK_KEYS:
        raise ConfigError(
            f"{where}: 'quick' must be a mapping with keys among {', '.join(sorted(QUICK_KEYS))}"
        )
    level = quick_spec if quick else {}

    def setting(name: str, cli: Any) -> Any:
        return cli if cli is not None else level.get(name, spec.get(name))

    n_epochs = setting("epochs", epochs)
    n_seeds = setting("seeds", seeds)
    n_seeds = 3 if n_seeds is None else n_seeds
    forced = hidden if hidden is not None else level.get("hidden")  # beats a method's own
    width = spec.get("hidden")
    for name, value in (("epochs", n_epochs), ("seeds", n_seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: {name}={shown(value)} is not valid; give an integer >= 1")
    check_width(width, where)
    check_width(forced, where)

    data_spec = spec.get("data") or {}
    if not isinstance(data_spec, dict):
        raise ConfigError(f"{where}: 'data' must be a mapping of data settings")
    data_spec = dict(data_spec)
    limit = limit_train if limit_train is not None else level.get("limit_train")
    if limit is not None:
        data_spec["limit_train"] = limit
    if data_dir is not None:
        data_spec["data_dir"] = data_dir
    try:
        data = RunConfig.from_dict({"data": data_spec}).data
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if data.val_size in (0, 0.0):
        raise ConfigError(
            f"{where}: data.val_size must be > 0: the bench tunes and selects on the "
            "validation split only"
        )

    entries = spec.get("methods")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{where}: 'methods' must be a non-empty mapping of method names")
    configs_dir = path.parent.parent
    context = Context(where, configs_dir, n_epochs, data, forced, width, device)
    resolved: list[Method] = []
    for name, entry in entries.items():
        resolved.extend(resolve_method(str(name), entry, context))
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
        configs_dir=configs_dir,
        quick=quick,
        seeds=tuple(range(n_seeds)),
        epochs=n_epochs,
        data=data,
        methods=tuple(select(resolved, methods, where)),
        all_methods=tuple(resolved),
    )


def match_baseline(m: Method, methods: list[Method], where: str) -> Method:
    """An mlp with its matched darnn method checked and its batch size filled in."""
    if m.kind != "mlp":
        return m
    target = next((t for t in methods if t.name == m.match), None)
    if target is None or target.config is None:
        darnn_names = [t.name for t in methods if t.kind == "darnn"]
        raise ConfigError(
            f"{where}: method {m.name!r} has match={shown(m.match)}, which is not a darnn "
            f"method of this file; choose one of: {', '.join(darnn_names)}"
        )
    return dataclasses.replace(m, batch_size=m.batch_size or target.config.train.batch_size)


def check_width(width: Any, where: str) -> None:
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 2):
        raise ConfigError(
            f"{where}: hidden={shown(width)} is not valid; give the total number of hidden "
            "units as an integer >= 2"
        )


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
    return [m for m in methods if m.name in wanted or m.group in wanted]


@dataclass(frozen=True)
class Context:
    where: str
    configs_dir: Path
    epochs: int
    data: DataConfig
    forced_hidden: int | None  # total hidden units of every darnn method (quick, --hidden)
    hidden: int | None  # the file's top-level width, for methods without their own
    device: str | None


def resolve_method(name: str, entry: Any, ctx: Context) -> list[Method]:
    where = f"{ctx.where}, method {name!r}"
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping (kind, recipe, overrides, ...)")
    kind = entry.get("kind", "darnn")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind={shown(kind)} is not valid; accepted: {', '.join(KINDS)}")
    unknown = set(entry) - METHOD_KEYS[kind]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} for kind {kind}; "
            f"valid: {', '.join(sorted(METHOD_KEYS[kind]))}"
        )
    note = entry.get("note", "")
    if not isinstance(note, str):
        raise ConfigError(f"{where}: note must be a string")
    batch = entry.get("batch_size")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ConfigError(f"{where}: batch_size={shown(batch)} is not valid; give an integer >= 1")
    if kind == "perceptron":
        return [Method(name, kind, name, note=note, batch_size=batch or 1)]
    if kind == "mlp":
        activation = entry.get("activation")
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"{where}: activation={shown(activation)} is not valid; accepted: "
                f"{', '.join(ACTIVATIONS)}"
            )
        lrs = entry.get("lrs", list(DEFAULT_LRS))
        if not (
            isinstance(lrs, list)
            and lrs
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in lrs)
        ):
            raise ConfigError(f"{where}: lrs={shown(lrs)} must be a list of learning rates > 0")
        match = entry.get("match")
        # batch_size 0 stands for "the matched recipe's" (match_baseline fills it in)
        return [
            Method(
                name,
                kind,
                name,
                note=note,
                activation=activation,
                match=match if isinstance(match, str) else shown(match),
                lrs=tuple(float(v) for v in lrs),
                batch_size=batch or 0,
            )
        ]
    return resolve_darnn(name, entry, ctx, where, note)


def resolve_darnn(
    name: str, entry: dict[str, Any], ctx: Context, where: str, note: str
) -> list[Method]:
    recipe = entry.get("recipe")
    if not isinstance(recipe, str) or not (ctx.configs_dir / recipe).is_file():
        raise ConfigError(
            f"{where}: recipe={shown(recipe)} must name a recipe file in {ctx.configs_dir} "
            "(e.g. recipe: default.yaml)"
        )
    overrides = entry.get("overrides", [])
    if not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
        raise ConfigError(f"{where}: overrides must be a list of 'section.key=value' strings")
    for item in overrides:
        key = item.partition("=")[0].strip()
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in BENCH_KEYS):
            raise ConfigError(
                f"{where}: override {item!r} changes a setting the bench fixes for every "
                "method (data.*, train.epochs, train.seed; the width through the 'hidden' key)"
            )
    variant = entry.get("variant")
    if variant is not None and variant not in VARIANTS:
        raise ConfigError(
            f"{where}: variant={shown(variant)} is not valid; accepted: {', '.join(VARIANTS)}"
        )
    lambdas = entry.get("lambdas")
    if (variant == "chain") != (lambdas is not None):
        raise ConfigError(f"{where}: 'lambdas' goes with variant: chain (and it needs them)")
    check_width(entry.get("hidden"), where)
    width = next(
        (w for w in (ctx.forced_hidden, entry.get("hidden"), ctx.hidden) if w is not None), None
    )
    recipe_path = ctx.configs_dir / recipe
    settings = {"data": dataclasses.asdict(ctx.data), "train": {"epochs": ctx.epochs}}
    if ctx.device is not None:
        settings["train"]["device"] = ctx.device

    def build(extra: Sequence[str]) -> RunConfig:
        try:
            return load_run_config(recipe_path, [*overrides, *extra], settings=settings)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    base = build([])
    layers = base.network.hidden
    sizing: list[str] = []
    if width is not None:
        if width % len(layers):
            raise ConfigError(
                f"{where}: hidden={width} cannot be split equally over the recipe's "
                f"{len(layers)} modules"
            )
        sizing = [override("network.hidden", [width // len(layers)] * len(layers))]
        layers = (width // len(layers),) * len(layers)
    if variant != "chain":
        extra = [*sizing, *VARIANT_OVERRIDES.get(variant or "", ())]
        return [
            Method(
                name,
                "darnn",
                name,
                note=note or NOTES.get(variant or "", ""),
                config=build(extra),
                recipe=recipe,
                overrides=(*overrides, *extra),
            )
        ]
    if len(layers) != 1 or layers[0] % 2:
        raise ConfigError(
            f"{where}: variant chain splits one hidden module into two equal halves; the "
            f"recipe's hidden={list(layers)} is not one module of an even size"
        )
    if not (
        isinstance(lambdas, list)
        and lambdas
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in lambdas)
    ):
        raise ConfigError(f"{where}: lambdas={shown(lambdas)} must be a list of numbers >= 0")
    half = layers[0] // 2
    out = []
    for lam in lambdas:
        extra = [
            override("network.hidden", [half, half]),
            f"network.lambda_forward={lam}",
            f"network.lambda_backward={lam}",
        ]
        out.append(
            Method(
                f"{name}_lambda{lam:g}",
                "darnn",
                name,
                note=note or f"two modules of {half}, lambda = {lam:g}",
                config=build(extra),
                recipe=recipe,
                overrides=(*overrides, *extra),
                lam=float(lam),
            )
        )
    return out
