"""One trial of a sweep: an ordinary ``darnn train`` run directory, scored and pruned.

The objective trains the sampled config under the sweep's trials/, reports the validation
accuracy after each epoch so the pruner can stop the run, and records on the trial why it
failed or was interrupted (an interrupted trial is queued again with the same parameters).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..errors import RunError
from ..runconfig import RunConfig, load_run_config
from .space import overrides
from .storage import import_optuna
from .study import ERROR, METRICS, OUTCOME, RETRIES, RUN_DIR, TRIALS_DIR, SweepSpec, requeue


class TrialFailed(Exception):
    """The trial's own error (recorded on the trial); the worker goes on with the next one."""


class TrialInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the trial; the worker stops."""


class Gate:
    """The local claim lock, held from counting the trials until a trial has been asked for."""

    def __init__(self, lock: Any) -> None:
        self.lock, self.held = lock, False

    def acquire(self) -> None:
        """Take the lock (at most 30 s: a sibling killed while holding it blocks no one)."""
        # Held for milliseconds; a sibling killed while holding it must not block the rest.
        self.held = bool(self.lock.acquire(timeout=30))

    def release(self) -> None:
        """Release the lock if this worker holds it."""
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
    """One line for a failed trial: the message, with the exception's type unless a RunError."""
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
        """Train the trial's run; returns its metric (Optuna's objective)."""
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
        """Whether the worker should stop (asked to, or orphaned by a killed parent)."""
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
        """Record the trial as failed with ``message`` and raise TrialFailed."""
        trial.set_user_attr(OUTCOME, "failed")
        trial.set_user_attr(ERROR, message)
        raise TrialFailed(message)

    def interrupted(self, trial: Any, message: str) -> None:
        """Record the trial as interrupted, stop the worker, and queue the trial again."""
        self.stop.set()
        trial.set_user_attr(OUTCOME, "interrupted")
        trial.set_user_attr(ERROR, f"{message}; queued again for when the sweep is resumed")
        requeue(trial.study, trial.params, trial.number, int(trial.user_attrs.get(RETRIES, 0)))


def trial_line(trial: Any, metric: str) -> str:
    """The line a worker prints when a trial ends: its outcome, value and run directory."""
    from optuna.trial import TrialState

    where = trial.user_attrs.get(RUN_DIR, "-")
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number}: {metric} {trial.value:.4f} ({where})"
    if trial.state == TrialState.PRUNED:
        last = max(trial.intermediate_values, default=None)
        at = "" if last is None else f" after epoch {last}"
        return f"trial {trial.number}: pruned{at} ({where})"
    return f"trial {trial.number}: failed: {trial.user_attrs.get(ERROR, 'no error recorded')}"


__all__ = [
    "Gate",
    "Objective",
    "TrialFailed",
    "TrialInterrupted",
    "error_message",
    "trial_config",
    "trial_line",
]
