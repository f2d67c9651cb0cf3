"""Graceful stop on SIGTERM, SIGINT and SIGUSR1.

Schedulers (SLURM, Kubernetes) pre-empt a job with a signal and a grace period. The first
signal asks the trainer to finish the current optimizer step, write a checkpoint and exit with
:data:`RESUMABLE_EXIT_CODE`; a second one aborts at once by raising
:class:`TrainingAbortedError` (no checkpoint: the run resumes from the last good one).

One request often reaches a rank by two paths: directly (``os.killpg`` of the job's process
group, Ctrl-C in a terminal, SLURM signalling every process of the step) and again through its
launcher, which relays what it received (Helios' own auto-spawn, ``torchrun``). Arrivals within
:data:`SAME_REQUEST_SECONDS` of the first count as that one request; only a signal after that
window is a second request, and aborts. DataLoader workers ignore stop signals altogether (see
``helios.data._worker_signals``): the rank's graceful stop ends them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import types
from collections.abc import Callable
from typing import Any

from helios.core import HeliosError

__all__ = [
    "RESUMABLE_EXIT_CODE",
    "SAME_REQUEST_SECONDS",
    "STOP_SIGNALS",
    "ForwardSignals",
    "StopSignals",
    "TrainingAbortedError",
]

#: Exit status of a process that stopped on a signal after writing a checkpoint: 75 is
#: ``EX_TEMPFAIL`` of sysexits.h, "try again later". A SLURM script can requeue on it.
RESUMABLE_EXIT_CODE = 75

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

#: Stop signals arriving within this many seconds of the first one are the same request (sent
#: to the process group and relayed by a launcher); a signal after it aborts.
SAME_REQUEST_SECONDS = 3.0


class TrainingAbortedError(HeliosError):
    """A second stop signal arrived before the graceful stop finished."""


class _SignalScope:
    """Handles the stop signals for the duration of a ``with`` block, then restores them.

    Signal handlers can only be installed from the main thread; elsewhere the block does
    nothing.
    """

    def __init__(self) -> None:
        self._previous: dict[signal.Signals, Callable[..., Any] | int | None] = {}

    def _handle(self, number: int, frame: types.FrameType | None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        """Install the handlers (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            for stop_signal in STOP_SIGNALS:
                self._previous[stop_signal] = signal.getsignal(stop_signal)
                signal.signal(stop_signal, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Restore the handlers that were there before."""
        for stop_signal, previous in self._previous.items():
            signal.signal(stop_signal, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


class StopSignals(_SignalScope):
    """Records the first stop request; raises :class:`TrainingAbortedError` on a second one.

    Args:
        same_request_seconds: arrivals this soon after the first belong to the same request
            (the process group's copy and the launcher's relay of one signal).
    """

    def __init__(self, same_request_seconds: float = SAME_REQUEST_SECONDS) -> None:
        """Create the handler set; nothing is installed until the block is entered."""
        super().__init__()
        self.requested: signal.Signals | None = None
        self.same_request_seconds = same_request_seconds
        self._first_arrival = 0.0

    def _handle(self, number: int, frame: types.FrameType | None) -> None:
        received = signal.Signals(number)
        now = time.monotonic()
        if self.requested is None:
            self.requested, self._first_arrival = received, now
            return
        if now - self._first_arrival > self.same_request_seconds:
            raise TrainingAbortedError(
                f"{received.name} received while stopping after {self.requested.name}: aborting "
                "without a checkpoint"
            )


class ForwardSignals(_SignalScope):
    """While a launcher waits for the processes it spawned, passes stop signals on to them.

    A scheduler signals the process it started; the ranks are its children. Each rank then
    stops gracefully on its own (and aborts on a second signal), so the launcher only relays.
    """

    def _handle(self, number: int, frame: types.FrameType | None) -> None:
        for child in multiprocessing.active_children():
            if child.pid is not None:
                os.kill(child.pid, number)
