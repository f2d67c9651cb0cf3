"""Data-loader workers never act on stop signals: the main process stops, and ends them.

Job schedulers stop a job by signalling every process of it: ``torchrun`` sends SIGTERM to each
rank's process group, SLURM to every process of the step, a terminal's Ctrl-C to its foreground
process group. Those groups hold the DataLoader workers too. Left alone, a worker dies of SIGTERM
(torch's worker handler re-raises it unless the signal came from its parent) or raises
``KeyboardInterrupt`` on SIGINT, and the main process then fails with "DataLoader worker (pid N)
is killed by signal" instead of finishing its step and writing a checkpoint.

So workers ignore SIGTERM, SIGINT and SIGUSR1. The main process's graceful stop ends them as it
ends any iterator: by shutting its workers down. Two pieces make it race-free:

- :class:`StopSafeDataLoader` blocks the stop signals in the calling thread while it creates an
  iterator (the moment workers are forked or spawned). A new worker, and a fork server started
  for it, inherit the blocked mask, so no stop signal can reach them before they ignore it; the
  main process receives any signal that arrived meanwhile as soon as the iterator exists.
- :class:`IgnoreStopSignals` wraps the user's ``worker_init_fn``: in the worker it sets the stop
  signals to ``SIG_IGN`` and unblocks them (a pending one is then discarded), then calls the
  user's function.

A worker that ignores stop signals must still end when its main process dies without shutting
it down (SIGKILL, a launcher terminating a rank after another failed). torch's worker watches
its parent process for that. Under the ``forkserver`` start method (Helios' auto-spawned ranks
use it for their workers) the parent is the fork server, and every worker holds the server's
"alive" pipe open, so the server outlives the main process and the workers wait on it forever,
holding the job's output pipes (a launcher reading them hangs). So :class:`IgnoreStopSignals`
also closes the worker's copy of that pipe: the server then ends with the main process, and the
workers see their parent gone and exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from multiprocessing import forkserver
from typing import Any

from torch.utils.data import DataLoader, Dataset

__all__ = ["STOP_SIGNALS", "IgnoreStopSignals", "StopSafeDataLoader", "stop_signals_blocked"]

#: The signals a scheduler or a terminal uses to stop a job.
STOP_SIGNALS: frozenset[signal.Signals] = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Hold back the stop signals in this thread for the block; they are delivered after it."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class IgnoreStopSignals:
    """A ``worker_init_fn`` that makes the worker ignore stop signals, then calls the user's.

    It is a module-level class, so it pickles to workers started by ``spawn`` or
    ``forkserver``.

    Args:
        user_init: the user's ``worker_init_fn``, called with the worker id afterwards.
    """

    def __init__(self, user_init: Callable[[int], None] | None) -> None:
        """Wrap ``user_init`` (``None``: nothing to call)."""
        self.user_init = user_init

    def __call__(self, worker_id: int) -> None:
        """Ignore the stop signals, unblock them, then run the user's init."""
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        release_fork_server()
        if self.user_init is not None:
            self.user_init(worker_id)


def release_fork_server() -> None:
    """Close this process's copy of its fork server's "alive" pipe (see the module's docstring).

    A process forked by a fork server inherits the write end of the pipe the server watches to
    know its main process is alive; while any copy is open the server stays up. Nothing to do in
    a process that holds none (started by ``fork`` or ``spawn`` from a main process without a
    fork server).
    """
    server = forkserver._forkserver  # the process-wide ForkServer; CPython keeps the fd here
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is None:
        return
    vars(server)["_forkserver_alive_fd"] = None  # not in typeshed
    with contextlib.suppress(OSError):
        os.close(alive)


class StopSafeDataLoader(DataLoader[Any]):
    """A ``torch.utils.data.DataLoader`` whose worker processes never act on stop signals.

    It takes the same arguments as ``DataLoader``; ``worker_init_fn`` is wrapped in
    :class:`IgnoreStopSignals`.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        worker_init_fn: Callable[[int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the loader with the worker-side signal set-up in front of ``worker_init_fn``."""
        super().__init__(dataset, worker_init_fn=IgnoreStopSignals(worker_init_fn), **kwargs)

    def _get_iterator(self) -> Any:
        # Workers start here (every epoch, or once with persistent workers).
        if self.num_workers == 0:
            return super()._get_iterator()
        with stop_signals_blocked():
            return super()._get_iterator()
