"""The worker processes of a sweep, and running a sweep to the end on this machine.

A worker loops: fail the trials whose worker stopped sending heartbeats (and queue them again
with the same parameters), count the study's trials, claim one if fewer than N are finished
or running, train it as an ordinary run directory, report its validation accuracy after each
epoch so the pruner can stop it. Local workers claim one at a time under a shared lock, so K
of them together start exactly N trials. Workers on other machines can race for the very
last slot by a few milliseconds; the study then holds one trial more than asked.

The first Ctrl-C or SIGTERM stops every local worker after its current batch (the trial is
recorded as interrupted and queued again); a second one aborts.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import RunError
from .objective import Gate, Objective, TrialFailed, TrialInterrupted, trial_line
from .storage import import_optuna
from .study import SweepSpec, Tally, create_study, load_study, say, tally


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


@contextlib.contextmanager
def stop_handlers(stop: Any, message: str | None = None) -> Iterator[None]:
    """``install_stop_handlers`` while inside, then the previous ones again.

    Only the main thread may set signal handlers; elsewhere (a sweep started from a
    thread) nothing is installed and only ``stop`` stops the workers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = install_stop_handlers(stop, message)
    try:
        yield
    finally:
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
    """Outcome of `run_sweep`: the counts, whether it was interrupted, the best trial."""

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
        with stop_handlers(stop):
            run_worker(spec, 0, threading.Lock(), stop)
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
    message = "stopping: each worker records its trial as interrupted after the current batch"
    with stop_handlers(stop, message):
        try:
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # inherited
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
    failures = [
        f"worker {i} ended with exit status {p.exitcode}"
        for i, p in enumerate(procs)
        if p.exitcode not in (0, 130, -signal.SIGINT, -signal.SIGTERM)
    ]
    return stop, failures


__all__ = [
    "STOP_SIGNALS",
    "SweepResult",
    "install_stop_handlers",
    "run_processes",
    "run_sweep",
    "run_worker",
    "stop_handlers",
    "worker_main",
]
