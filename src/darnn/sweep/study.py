"""What a sweep is: its spec, checked before any work, its Optuna study, and its trials.

Everything lives in Optuna's own storage (see ``storage``): the study holds the base config
and the space as user attributes, each trial its run directory and, when it failed, its
error. Workers coordinate only through that storage, so a ``darnn sweep`` on another
machine with the same ``--storage``/``--study`` joins the same study.

Trials count towards N when they are COMPLETE, PRUNED, or FAIL with an error of their own
(an invalid sampled config, a failed run). Trials that were interrupted (Ctrl-C, SIGTERM)
or whose worker died are recorded FAIL with the reason and queued again, so re-running the
command completes the study.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runconfig import ConfigError, load_run_config
from .space import Param, load_space, space_dict
from .storage import (
    SweepError,
    import_optuna,
    make_storage,
    read_storage,
    shown_url,
    storage_url,
)

TRIALS_DIR = "trials"
METRICS = {"val_accuracy": "val_acc", "best_val_accuracy": "best_val_acc"}
PRUNERS = ("median", "halving", "none")
# Config keys that describe the machine, not the experiment: workers elsewhere may differ.
LOCAL_KEYS = (
    "data.data_dir",
    "data.download",
    "train.device",
    "train.threads",
    "train.eval_batch_size",
    "train.checkpoint_every",
)
# Study and trial user attributes.
SPACE_ATTR, BASE_ATTR, METRIC_ATTR = "darnn_space", "darnn_base_config", "darnn_metric"
OUTCOME, ERROR, RUN_DIR = "darnn_outcome", "error", "run_dir"
RETRY_OF, RETRIES = "darnn_retry_of", "darnn_retries"
MAX_RETRIES = 2  # a trial that keeps killing its workers is not tried forever


@dataclass(frozen=True)
class SweepSpec:
    """Everything a worker needs (picklable: it is sent to spawned worker processes)."""

    storage: str
    study: str
    out_dir: str
    base: dict[str, dict[str, Any]]  # the resolved base config of this machine
    params: tuple[Param, ...]
    trials: int
    metric: str = "val_accuracy"
    pruner: str = "median"
    startup_trials: int = 5
    heartbeat: int = 60
    timeout: float | None = None
    sampler_seed: int | None = None
    command: tuple[str, ...] = field(default_factory=tuple)

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        """The search space as written in a space file."""
        return space_dict(list(self.params))

    def study_attrs(self) -> dict[str, Any]:
        """What the study records so that a resumed sweep can be checked against it."""
        return {
            SPACE_ATTR: self.space,
            BASE_ATTR: comparable_base(self.base),
            METRIC_ATTR: self.metric,
        }


def comparable_base(base: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The base config without machine-local keys, as JSON gives it back."""
    out = json.loads(json.dumps(base))
    for key in LOCAL_KEYS:
        section, name = key.split(".")
        out.get(section, {}).pop(name, None)
    return out


def study_mismatch(attrs: dict[str, Any], spec: SweepSpec, storage_text: str) -> str | None:
    """Why an existing study cannot continue with ``spec`` (None when it can)."""
    where = f"study '{spec.study}' in {storage_text}"
    fix = "use another --study name, or the space and base config it was created with"
    if SPACE_ATTR not in attrs or BASE_ATTR not in attrs:
        return f"{where} exists but was not created by darnn sweep; use another --study name"
    wanted = spec.study_attrs()
    if attrs[SPACE_ATTR] != wanted[SPACE_ATTR]:
        old, new = attrs[SPACE_ATTR], wanted[SPACE_ATTR]
        keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        return (
            f"{where} was created with a different search space (differs in: "
            f"{', '.join(keys)}); {fix}"
        )
    if attrs[BASE_ATTR] != wanted[BASE_ATTR]:
        stored = attrs[BASE_ATTR]
        now = wanted[BASE_ATTR]
        keys = sorted(
            f"{s}.{k}"
            for s in {*stored, *now}
            for k in {*stored.get(s, {}), *now.get(s, {})}
            if stored.get(s, {}).get(k, object()) != now.get(s, {}).get(k, object())
        )
        return (
            f"{where} was created with a different base config (differs in: "
            f"{', '.join(keys)}); {fix}"
        )
    if attrs.get(METRIC_ATTR, spec.metric) != spec.metric:
        return (
            f"{where} optimises {attrs[METRIC_ATTR]}, not {spec.metric}; give --metric "
            f"{attrs[METRIC_ATTR]} or use another --study name"
        )
    return None


def prepare_sweep(
    *,
    space_path: str,
    trials: int,
    config_path: str | None = None,
    config_overrides: Sequence[str] = (),
    storage: str | None = None,
    study: str | None = None,
    out: str | None = None,
    metric: str = "val_accuracy",
    pruner: str = "median",
    startup_trials: int = 5,
    heartbeat: int = 60,
    timeout: float | None = None,
    sampler_seed: int | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    command: Sequence[str] = (),
    check_data: bool = True,
) -> SweepSpec:
    """Check everything a user can get wrong, writing nothing; returns the sweep to run."""
    for name, value, minimum in (
        ("--trials", trials, 1),
        ("--heartbeat", heartbeat, 1),
        ("--startup-trials", startup_trials, 0),
    ):
        if value < minimum:
            raise SweepError(f"{name} must be an integer >= {minimum}, got {value}")
    if timeout is not None and not timeout > 0:
        raise SweepError(f"--timeout must be a number of seconds > 0, got {timeout}")
    if metric not in METRICS:
        raise SweepError(f"--metric {metric!r} is not known; choose one of {', '.join(METRICS)}")
    if pruner not in PRUNERS:
        raise SweepError(f"--pruner {pruner!r} is not known; choose one of {', '.join(PRUNERS)}")
    base = load_run_config(config_path, config_overrides, settings=settings)
    if base.data.val_size == 0:
        raise ConfigError(
            "a sweep maximises validation accuracy (never test), so the base config needs a "
            "validation split: set data.val_size to a fraction > 0 or a count >= 1"
        )
    params = load_space(space_path, base)
    name = study or Path(space_path).stem
    out_dir = Path(out) if out else Path("sweeps") / name
    url = storage_url(storage, out_dir)
    spec = SweepSpec(
        storage=url,
        study=name,
        out_dir=str(out_dir.resolve()),
        base=base.to_dict(),
        params=tuple(params),
        trials=trials,
        metric=metric,
        pruner=pruner,
        startup_trials=startup_trials,
        heartbeat=heartbeat,
        timeout=timeout,
        sampler_seed=sampler_seed,
        command=tuple(command),
    )
    stored = read_storage(url, name)
    if stored.user_attrs is not None:
        problem = study_mismatch(stored.user_attrs, spec, shown_url(url))
        if problem:
            raise SweepError(problem)
    else:
        trials_dir = out_dir / TRIALS_DIR
        if trials_dir.is_dir() and any(trials_dir.iterdir()):
            raise SweepError(
                f"{trials_dir} already holds the runs of another sweep, but study '{name}' "
                f"does not exist in {shown_url(url)}; choose another --out (or --storage)"
            )
    if out_dir.exists() and not out_dir.is_dir():
        raise SweepError(f"--out {out_dir} exists and is not a directory")
    if check_data and "data.name" not in spec.space:  # one clear error, not N failed trials
        from ..data import load_data

        load_data(base.data)
    return spec


def create_study(spec: SweepSpec) -> Any:
    """Create the sweep directory and the study (or load it); the first writes of a sweep."""
    optuna = import_optuna()
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    storage = make_storage(spec.storage)
    study = optuna.create_study(
        storage=storage, study_name=spec.study, direction="maximize", load_if_exists=True
    )
    attrs = study.user_attrs
    if SPACE_ATTR in attrs:  # another process created it meanwhile: same checks again
        problem = study_mismatch(attrs, spec, shown_url(spec.storage))
        if problem:
            raise SweepError(problem)
    else:
        for key, value in spec.study_attrs().items():
            study.set_user_attr(key, value)
    storage.engine.dispose()
    return study


def load_study(spec: SweepSpec, worker: int = 0, heartbeat: bool = True) -> Any:
    """The study with this worker's sampler and the pruner; heartbeats when it runs trials."""
    optuna = import_optuna()
    seed = None if spec.sampler_seed is None else spec.sampler_seed + worker
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=spec.startup_trials, constant_liar=True, seed=seed
    )
    if spec.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials)
    elif spec.pruner == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    else:
        pruner = optuna.pruners.NopPruner()
    storage = make_storage(spec.storage, spec.heartbeat if heartbeat else None, retry_lost)
    return optuna.load_study(study_name=spec.study, storage=storage, sampler=sampler, pruner=pruner)


@dataclass
class Tally:
    """The trials of a study by what they mean for the sweep."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0  # FAIL with an error of their own: a result, counted
    retried: int = 0  # FAIL because interrupted or their worker died: queued again
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        """Trials that ended: complete, pruned or failed."""
        return self.complete + self.pruned + self.failed

    def describe(self) -> str:
        """The counts in words, e.g. "6 complete, 0 pruned, 0 failed"."""
        parts = [f"{self.complete} complete", f"{self.pruned} pruned", f"{self.failed} failed"]
        if self.retried:
            parts.append(f"{self.retried} interrupted or lost (retried)")
        if self.running:
            parts.append(f"{self.running} running")
        if self.waiting:
            parts.append(f"{self.waiting} queued")
        return ", ".join(parts)


def tally(trials: Sequence[Any]) -> Tally:
    """Count the trials by outcome."""
    from optuna.trial import TrialState

    t = Tally()
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            t.complete += 1
        elif trial.state == TrialState.PRUNED:
            t.pruned += 1
        elif trial.state == TrialState.FAIL:
            if trial.user_attrs.get(OUTCOME) == "failed":
                t.failed += 1
            else:
                t.retried += 1
        elif trial.state == TrialState.RUNNING:
            t.running += 1
        elif trial.state == TrialState.WAITING:
            t.waiting += 1
    return t


def retry_lost(study: Any, trial: Any) -> None:
    """Heartbeat-stale trial (its worker was killed): queue it again with the same parameters."""
    retries = int(trial.user_attrs.get(RETRIES, 0))
    again = retries < MAX_RETRIES
    say(
        f"trial {trial.number}: its worker stopped sending heartbeats; marked failed"
        + (", queued again" if again else f" (already retried {retries} times; not again)")
    )
    if again:
        requeue(study, trial.params, trial.number, retries)


def requeue(study: Any, params: dict[str, Any], number: int, retries: int) -> None:
    """Queue trial ``number``'s parameters again, counting the retry."""
    study.enqueue_trial(
        params, user_attrs={RETRY_OF: number, RETRIES: retries + 1}, skip_if_exists=False
    )


def say(message: str) -> None:
    """Print a progress line of the sweep."""
    print(f"darnn sweep: {message}", flush=True)


__all__ = [
    "BASE_ATTR",
    "ERROR",
    "LOCAL_KEYS",
    "MAX_RETRIES",
    "METRICS",
    "METRIC_ATTR",
    "OUTCOME",
    "PRUNERS",
    "RETRIES",
    "RETRY_OF",
    "RUN_DIR",
    "SPACE_ATTR",
    "TRIALS_DIR",
    "SweepSpec",
    "Tally",
    "create_study",
    "load_study",
    "prepare_sweep",
    "requeue",
    "say",
    "tally",
]
