"""Stopping a run on a signal: Ctrl-C or SIGTERM end it at the next batch boundary."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignals:
    """SIGINT (Ctrl-C) or SIGTERM (SLURM, `kill`) ask the loop to stop at the next batch.

    At that batch boundary it saves a checkpoint. A second Ctrl-C aborts at once; a
    repeated SIGTERM does not (torchrun may deliver it twice; a scheduler's SIGKILL follows
    its grace period anyway).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # only there can it be set
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class DeferredSignals:
    """While the block runs, SIGINT and SIGTERM are only recorded (``received``).

    The last writes of a finished run (model, plots) complete even when Ctrl-C is pressed again and
    again during shutdown, instead of a KeyboardInterrupt tearing through matplotlib or
    the interpreter's finalisation. The previous handlers come back afterwards.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in StopSignals.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
