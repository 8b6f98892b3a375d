"""Sweeps on Optuna: checking a sweep, its study, the objective and the worker processes.

Everything lives in Optuna's own storage (any SQLAlchemy URL; a SQLite file in the sweep
directory by default): the study holds the base config and the space as user attributes,
each trial its run directory and, when it failed, its error. Workers coordinate only through
that storage, so a ``darnn sweep`` on another machine with the same ``--storage``/``--study``
joins the same study.

A worker loops: fail the trials whose worker stopped sending heartbeats (and queue them again
with the same parameters), count the study's trials, claim one if fewer than N are finished
or running, train it as an ordinary run directory, report its validation accuracy after each
epoch so the pruner can stop it. Local workers claim one at a time under a shared lock, so K
of them together start exactly N trials. Workers on other machines can race for the very
last slot by a few milliseconds; the study then holds one trial more than asked.

Trials count towards N when they are COMPLETE, PRUNED, or FAIL with an error of their own
(an invalid sampled config, a failed run). Trials that were interrupted (Ctrl-C, SIGTERM)
or whose worker died are recorded FAIL with the reason and queued again, so re-running the
command completes the study.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

from ..runconfig import ConfigError, RunConfig, load_run_config
from ..runs import RunError
from .space import Param, load_space, overrides, space_dict

STUDY_DB, TRIALS_DIR = "study.db", "trials"
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
INSTALL_HINT = "pip install -e '.[sweep]'"


class SweepError(RunError):
    """A sweep cannot start or its storage cannot be used; the message says what to do."""


class TrialFailed(Exception):
    """The trial's own error (recorded on the trial); the worker goes on with the next one."""


class TrialInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the trial; the worker stops."""


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SweepError(
            f"darnn sweep needs Optuna, which is not installed; install the sweep extra: "
            f"{INSTALL_HINT} (in the darnn checkout)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # darnn prints its own trial lines
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# ---------------------------------------------------------------- storage


def storage_url(value: str | None, out_dir: Path) -> str:
    """A SQLAlchemy URL: the default SQLite file in ``out_dir``, or a path taken as SQLite."""
    if value is None:
        return f"sqlite:///{(out_dir / STUDY_DB).resolve()}"
    if "://" not in value:
        return f"sqlite:///{Path(value).resolve()}"
    return value


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported by read_storage
        return url


def engine_kwargs(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    if backend == "sqlite":  # several processes write: wait for the lock instead of failing
        return {"connect_args": {"timeout": 60}}
    if backend == "postgresql":
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {"pool_pre_ping": True}


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other backends)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise SweepError(
            f"storage {url} is an in-memory SQLite database, which worker processes cannot "
            "share; give a file, e.g. --storage sqlite:///sweeps/NAME/study.db"
        )
    return Path(parsed.database)


def reading(url: str) -> tuple[str, dict[str, Any]]:
    """URL and engine arguments that read ``url`` without writing to it.

    A SQLite file is opened read-only through an SQLite URI (built here, so that no URL
    parser decodes the file name on the way: '#', '?' and '%' stay part of it).
    """
    path = sqlite_path(url)
    if path is None:
        return url, engine_kwargs(url)
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    return "sqlite://", {"creator": functools.partial(sqlite3.connect, uri, uri=True, timeout=60)}


@dataclass
class StoredStudy:
    """What a storage holds, read without writing anything."""

    names: list[str]
    user_attrs: dict[str, Any] | None  # of the requested study; None if it does not exist


def read_storage(url: str, study_name: str | None) -> StoredStudy:
    """Connect to ``url`` and read the studies it holds, writing nothing (not even tables).

    A SQLite file that does not exist yet holds no study; it is not created here.
    """
    optuna = import_optuna()
    import sqlalchemy
    from sqlalchemy import exc as sa_exc

    try:
        path = sqlite_path(url)
    except sa_exc.ArgumentError as exc:
        raise SweepError(
            f"--storage {url!r} is not a valid database URL ({exc}); give a SQLAlchemy URL "
            "such as sqlite:///sweeps/NAME/study.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
        ) from None
    if path is not None and not path.exists():
        return StoredStudy([], None)
    read_url, read_kwargs = reading(url)
    try:
        engine = sqlalchemy.create_engine(read_url, **read_kwargs)
        try:
            with engine.connect() as connection:
                tables = set(sqlalchemy.inspect(connection).get_table_names())
        finally:
            engine.dispose()
    except (ImportError, sa_exc.NoSuchModuleError) as exc:
        raise SweepError(
            f"no database driver for storage {shown_url(url)} ({exc}); PostgreSQL needs "
            f"psycopg, which the sweep extra installs: {INSTALL_HINT}"
        ) from None
    except sa_exc.SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise SweepError(
            f"cannot reach the storage {shown_url(url)}: {reason}. Check the URL, that the "
            "database server is running and reachable from this machine, and the credentials."
        ) from None
    if "studies" not in tables or "version_info" not in tables:
        return StoredStudy([], None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = optuna.storages.RDBStorage(
                read_url, engine_kwargs=read_kwargs, skip_table_creation=True
            )
        try:
            names = list(optuna.get_all_study_names(storage))
            attrs = None
            if study_name in names:
                attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
        finally:
            storage.engine.dispose()
    except (RuntimeError, sa_exc.SQLAlchemyError) as exc:
        reason = " ".join(str(exc).split())
        raise SweepError(
            f"storage {shown_url(url)} holds tables that this Optuna "
            f"({optuna.__version__}) cannot read: {reason}"
        ) from None
    return StoredStudy(names, attrs)


def make_storage(url: str, heartbeat: int | None = None) -> Any:
    """Optuna's RDB storage for ``url``, with heartbeats when a worker will run trials."""
    optuna = import_optuna()
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat, "heartbeat_stale_trial_callback": retry_lost}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)


# ---------------------------------------------------------------- what a sweep is


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
        return space_dict(list(self.params))

    def study_attrs(self) -> dict[str, Any]:
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


def study_mismatch(attrs: dict[str, Any], spec: SweepSpec, shown: str) -> str | None:
    """Why an existing study cannot continue with ``spec`` (None when it can)."""
    where = f"study '{spec.study}' in {shown}"
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
        from ..training import load_data

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


# ---------------------------------------------------------------- counting trials


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
        return self.complete + self.pruned + self.failed

    def describe(self) -> str:
        parts = [f"{self.complete} complete", f"{self.pruned} pruned", f"{self.failed} failed"]
        if self.retried:
            parts.append(f"{self.retried} interrupted or lost (retried)")
        if self.running:
            parts.append(f"{self.running} running")
        if self.waiting:
            parts.append(f"{self.waiting} queued")
        return ", ".join(parts)


def tally(trials: Sequence[Any]) -> Tally:
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
    study.enqueue_trial(
        params, user_attrs={RETRY_OF: number, RETRIES: retries + 1}, skip_if_exists=False
    )


def say(message: str) -> None:
    print(f"darnn sweep: {message}", flush=True)


# ---------------------------------------------------------------- the objective


class Gate:
    """The local claim lock, held from counting the trials until a trial has been asked for."""

    def __init__(self, lock: Any) -> None:
        self.lock, self.held = lock, False

    def acquire(self) -> None:
        # Held for milliseconds; a sibling killed while holding it must not block the rest.
        self.held = bool(self.lock.acquire(timeout=30))

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()


def trial_config(spec: SweepSpec, values: dict[str, Any]) -> RunConfig:
    """The base config with the sampled values; each worker is single-threaded by default."""
    settings = overrides(list(spec.params), values)
    if spec.base["train"].get("threads") is None and "train.threads" not in values:
        settings.setdefault("train", {})["threads"] = 1
    return load_run_config(base=RunConfig.from_dict(spec.base), settings=settings)


def error_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, RunError) else f"{type(exc).__name__}: {text}"


@dataclass
class Objective:
    """One trial: an ordinary ``darnn train`` run directory under the sweep's trials/."""

    spec: SweepSpec
    gate: Gate
    stop: Any  # an Event: set by Ctrl-C/SIGTERM or by the parent process
    parent: int | None = None  # pid of the parent of a worker process: stop if it dies
    pruned_at: int | None = None
    best: float | None = None  # the best validation accuracy of the trial so far

    def __call__(self, trial: Any) -> float:
        from ..training import train

        optuna = import_optuna()
        self.gate.release()  # the trial exists: other local workers may claim the next one
        self.pruned_at, self.best = None, None
        run_dir = Path(self.spec.out_dir) / TRIALS_DIR / f"trial-{trial.number:04d}"
        try:
            trial.set_user_attr(RUN_DIR, str(run_dir))
            trial.set_user_attr("host", socket.gethostname())
            values = {p.key: p.suggest(trial) for p in self.spec.params}
            config = trial_config(self.spec, values)
            summary = train(
                config,
                run_dir,
                progress=False,
                command=[*self.spec.command, f"(trial {trial.number})"],
                on_batch=lambda epoch, done: self.stopping(),
                on_epoch=lambda record: self.report(trial, record),
            )
        except KeyboardInterrupt:
            self.interrupted(trial, "aborted by a second Ctrl-C or SIGTERM")
            raise TrialInterrupted from None
        except Exception as exc:  # the trial's own error: recorded, and the sweep goes on
            self.fail(trial, error_message(exc))
        if summary["status"] == "interrupted":
            pos = summary.get("position", {})
            self.interrupted(
                trial,
                f"interrupted (Ctrl-C or SIGTERM) in epoch {pos.get('epoch', 0) + 1}, "
                f"batch {pos.get('batch', '?')}",
            )
            raise TrialInterrupted
        if summary["status"] == "stopped" and self.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned after epoch {self.pruned_at}")
        value = summary[METRICS[self.spec.metric]]
        if value is None:
            self.fail(trial, "the run has no validation split to score (data.val_size=0)")
        trial.set_user_attr("epochs", summary["epochs"])
        return float(value)

    def stopping(self) -> bool:
        if self.parent is not None and os.getppid() != self.parent:
            self.stop.set()  # orphaned (the parent was killed): stop, the trial is requeued
        return bool(self.stop.is_set())

    def report(self, trial: Any, record: dict[str, Any]) -> bool:
        """After each epoch: report the metric so far, and stop the run if the pruner says so."""
        value = record.get("val_acc")
        if value is None:
            return False
        self.best = value if self.best is None else max(self.best, value)
        if self.spec.metric == "best_val_accuracy":
            value = self.best
        trial.report(float(value), int(record["epoch"]))
        if trial.should_prune():
            self.pruned_at = int(record["epoch"])
            return True
        return False

    def fail(self, trial: Any, message: str) -> NoReturn:
        trial.set_user_attr(OUTCOME, "failed")
        trial.set_user_attr(ERROR, message)
        raise TrialFailed(message)

    def interrupted(self, trial: Any, message: str) -> None:
        self.stop.set()
        trial.set_user_attr(OUTCOME, "interrupted")
        trial.set_user_attr(ERROR, f"{message}; queued again for when the sweep is resumed")
        requeue(trial.study, trial.params, trial.number, int(trial.user_attrs.get(RETRIES, 0)))


def trial_line(trial: Any, metric: str) -> str:
    from optuna.trial import TrialState

    where = trial.user_attrs.get(RUN_DIR, "-")
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number}: {metric} {trial.value:.4f} ({where})"
    if trial.state == TrialState.PRUNED:
        last = max(trial.intermediate_values, default=None)
        at = "" if last is None else f" after epoch {last}"
        return f"trial {trial.number}: pruned{at} ({where})"
    return f"trial {trial.number}: failed: {trial.user_attrs.get(ERROR, 'no error recorded')}"


# ---------------------------------------------------------------- workers


def load_study(spec: SweepSpec, worker: int = 0, heartbeat: bool = True) -> Any:
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
    storage = make_storage(spec.storage, spec.heartbeat if heartbeat else None)
    return optuna.load_study(study_name=spec.study, storage=storage, sampler=sampler, pruner=pruner)


def run_worker(
    spec: SweepSpec, worker: int, lock: Any, stop: Any, parent: int | None = None
) -> None:
    """Run trials until the study has ``spec.trials`` finished ones (or stop, or timeout)."""
    optuna = import_optuna()
    study = load_study(spec, worker)
    objective = Objective(spec, Gate(lock), stop, parent)
    deadline = None if spec.timeout is None else time.monotonic() + spec.timeout
    poll = min(2.0, float(spec.heartbeat))
    waiting_said, claim = False, True
    try:
        while not objective.stopping() and (deadline is None or time.monotonic() < deadline):
            objective.gate.acquire()
            try:
                optuna.storages.fail_stale_trials(study)
                counts = tally(study.get_trials(deepcopy=False))
                if counts.finished >= spec.trials:
                    break
                claim = counts.waiting > 0 or counts.finished + counts.running < spec.trials
                if claim:
                    waiting_said = False
                    study.optimize(
                        objective,
                        n_trials=1,
                        catch=(TrialFailed,),
                        callbacks=[lambda s, t: say(trial_line(t, spec.metric))],
                    )
            finally:
                objective.gate.release()
            if not claim:  # the last trials run elsewhere: wait, and take over lost ones
                if not waiting_said:
                    say(f"waiting for {counts.running} running trial(s) to finish")
                    waiting_said = True
                stop.wait(poll)
    except TrialInterrupted:
        stop.set()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_stop_handlers(stop: Any, message: str | None = None) -> dict[int, Any]:
    """First Ctrl-C/SIGTERM: stop after the current batch; a second one aborts.

    Returns the previous handlers. Only this process's own signals count: ``stop`` may
    also be set by another process.
    """
    received = []

    def handle(signum: int, frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()
        if message:
            say(message)

    return {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}


def restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def worker_main(spec: SweepSpec, worker: int, lock: Any, stop: Any, parent: int) -> None:
    """Entry point of a spawned worker process.

    It leaves the terminal's process group, so a Ctrl-C reaches the parent only, which
    stops every worker through ``stop``; the parent started it with the stop signals
    blocked, so none can arrive before the handlers are in place.
    """
    os.setpgrp()
    install_stop_handlers(stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        run_worker(spec, worker, lock, stop, parent)
    except KeyboardInterrupt:
        sys.exit(130)
    except RunError as exc:
        print(f"darnn: error: worker {worker}: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)


@dataclass
class SweepResult:
    tally: Tally
    interrupted: bool
    worker_failures: list[str]
    best: Any  # the best FrozenTrial, or None


def run_sweep(
    spec: SweepSpec, workers: int = 1, on_start: Callable[[], None] | None = None
) -> SweepResult:
    """Create or load the study, run ``workers`` local workers to the end, and tally."""
    create_study(spec)
    if on_start is not None:
        on_start()
    failures: list[str] = []
    if workers == 1:  # in this process: simplest to debug, same code path otherwise
        stop: Any = threading.Event()
        main = threading.current_thread() is threading.main_thread()
        previous = install_stop_handlers(stop) if main else {}
        try:
            run_worker(spec, 0, threading.Lock(), stop)
        finally:
            restore_handlers(previous)
    else:
        stop, failures = run_processes(spec, workers)
    study = load_study(spec, heartbeat=False)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.value is not None and t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value) if complete else None
    counts = tally(trials)
    return SweepResult(counts, stop.is_set() and counts.finished < spec.trials, failures, best)


def run_processes(spec: SweepSpec, workers: int) -> tuple[Any, list[str]]:
    """K spawned worker processes sharing a claim lock and a stop event."""
    ctx = multiprocessing.get_context("spawn")  # no fork: torch and DB connections in the parent
    lock, stop = ctx.Lock(), ctx.Event()
    procs = [
        ctx.Process(
            target=worker_main, args=(spec, i, lock, stop, os.getpid()), name=f"darnn-sweep-{i}"
        )
        for i in range(workers)
    ]
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main:
        previous = install_stop_handlers(
            stop, "stopping: each worker records its trial as interrupted after the current batch"
        )
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # inherited by workers
        try:
            for p in procs:
                p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # a second Ctrl-C: end the workers now
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
    finally:
        restore_handlers(previous)
    failures = [
        f"worker {i} ended with exit status {p.exitcode}"
        for i, p in enumerate(procs)
        if p.exitcode not in (0, 130, -signal.SIGINT, -signal.SIGTERM)
    ]
    return stop, failures


__all__ = [
    "LOCAL_KEYS",
    "METRICS",
    "PRUNERS",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "Tally",
    "create_study",
    "load_study",
    "prepare_sweep",
    "read_storage",
    "run_sweep",
    "storage_url",
    "tally",
]
