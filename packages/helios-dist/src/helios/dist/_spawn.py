"""Auto-spawn: one process per device on this machine, when no launcher started us.

With several GPUs and no torchrun, the trainer calls :func:`spawn` and each child runs the
training function as one rank. The children speak torchrun's environment variables, so
:meth:`TorchDistributed.from_environment` joins the group in them exactly as under torchrun.

Two jobs on one machine never clash on a port: the parent hosts the rendezvous store itself on
a port the kernel picks (port 0) and keeps its socket open for the life of the job; the children
connect to it as clients, the way torchrun's workers connect to their agent's store.

A failing child never leaves the others hung: as soon as one exits with an error, the others
get a grace period to stop, then SIGTERM, then (a second later) SIGKILL, and the parent raises
:class:`SpawnError` naming the rank that failed first and how: its traceback, the signal that
killed it (the OOM killer's SIGKILL), its exit status, or that it hung while the others failed
waiting for it. A failed collective is never the cause when another rank's failure explains it:
ranks waiting for a dead or hung rank fail *because of* it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing

from helios.core import ConfigurationError, HeliosError
from helios.dist._context import BACKEND_VARIABLE, CollectiveError, first_failure_time

__all__ = ["SpawnError", "spawn"]

_BACKENDS = ("auto", "gloo", "nccl")
_PR_SET_PDEATHSIG = 1
#: How long the parent's store waits for a child to connect, and for a key; the children's own
#: process group has its own timeout.
_STORE_TIMEOUT = timedelta(minutes=30)


class SpawnError(HeliosError):
    """A process started by :func:`spawn` failed, or the job did not finish in time.

    Attributes:
        rank: the rank that failed first (``None`` when the job timed out).
        traceback: that rank's traceback text, ``None`` if it died without raising (a signal,
            ``os._exit``).
        exit_code: its exit code (negative: killed by that signal), ``None`` on a timeout.
        later_failures: the tracebacks of the ranks that raised after it (typically
            :class:`~helios.dist.CollectiveError` in ranks that were waiting for it), by rank.
    """

    def __init__(
        self,
        message: str,
        *,
        rank: int | None = None,
        traceback: str | None = None,
        exit_code: int | None = None,
        later_failures: dict[int, str] | None = None,
    ) -> None:
        """Record which rank failed, how, and its traceback."""
        super().__init__(message)
        self.rank = rank
        self.traceback = traceback
        self.exit_code = exit_code
        self.later_failures = dict(later_failures or {})

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the keyword attributes (exceptions pickle only ``args`` by default)."""
        return (
            _rebuild_spawn_error,
            (str(self), self.rank, self.traceback, self.exit_code, self.later_failures),
        )


def _rebuild_spawn_error(
    message: str,
    rank: int | None,
    trace: str | None,
    exit_code: int | None,
    later_failures: dict[int, str],
) -> SpawnError:
    return SpawnError(
        message, rank=rank, traceback=trace, exit_code=exit_code, later_failures=later_failures
    )


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to send SIGTERM to this child when the parent dies (no orphaned ranks)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(_exit_code_for(signal.SIGTERM))


def _exit_code_for(signum: int) -> int:
    return 128 + int(signum)


def _child_main(
    rank: int,
    environment: dict[str, str],
    parent_pid: int,
    error_path: str,
    fn: Callable[..., object],
    args: Sequence[Any],
) -> None:
    """Run ``fn(*args)`` as ``rank``; on an exception, leave its traceback for the parent."""
    _die_with_parent(parent_pid)
    # A "spawn" child inherits "spawn" as its default start method, so its DataLoader workers
    # would re-import everything, every epoch. Plain fork is no answer: a rank has threads
    # (Gloo, queue feeders) and a fork while one of them holds an interpreter lock deadlocks the
    # worker (seen with CPython 3.11). A fork server, itself single-threaded and with torch
    # already imported, forks workers quickly and safely.
    if "forkserver" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("forkserver", force=True)
        multiprocessing.set_forkserver_preload(["torch"])
    os.environ.update(environment)
    os.environ["RANK"] = os.environ["LOCAL_RANK"] = str(rank)
    try:
        fn(*args)
    except Exception as error:
        record = {
            "traceback": traceback.format_exc(),
            "time": first_failure_time() or time.time(),
            "waiting": _failed_waiting(error),
        }
        partial = f"{error_path}.partial"
        with open(partial, "wb") as file:
            pickle.dump(record, file)
        os.replace(partial, error_path)
        _release_process_groups()
        # Leave now: a normal exit would join this rank's own children (DataLoader workers),
        # and one that hangs would keep a failed rank alive and its job waiting forever.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    _release_process_groups()


def _failed_waiting(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed: the consequence of another rank's failure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CollectiveError | dist.DistError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _release_process_groups() -> None:
    """Free ``fn``'s leftovers now, while the interpreter is whole, not during its shutdown.

    A DDP network keeps its process group alive after ``destroy_process_group``; when it is
    freed only at interpreter shutdown, a Gloo worker thread may still be releasing the tensors
    of the last collective and need the GIL, which a finalising interpreter no longer grants:
    the process aborts ("terminate called without an active exception"). ``fn``'s networks
    are unreachable once it returns, so a collection here destroys their group, and joins its
    threads, in good time.
    """
    gc.collect()


def _check_arguments(
    fn: object, nprocs: object, backend: str, timeout: float | None, grace_period: float
) -> None:
    if not callable(fn):
        raise ConfigurationError(f"fn must be a callable, got {fn!r}")
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ConfigurationError(f"nprocs must be an int >= 1, got {nprocs!r}")
    if backend not in _BACKENDS:
        raise ConfigurationError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "nccl" and nprocs > torch.cuda.device_count():
        raise ConfigurationError(
            f"backend='nccl' with nprocs={nprocs} needs {nprocs} GPUs, but "
            f"{torch.cuda.device_count()} are visible"
        )
    if timeout is not None and not timeout > 0:
        raise ConfigurationError(f"timeout must be None or > 0 seconds, got {timeout!r}")
    if not grace_period >= 0:
        raise ConfigurationError(f"grace_period must be >= 0 seconds, got {grace_period!r}")


def _join_all(processes: Sequence[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))


def _stop(processes: Sequence[Any], grace_period: float) -> list[int]:
    """Give running children ``grace_period`` to end, then SIGTERM, then SIGKILL.

    A rank's first SIGTERM only asks it to stop gracefully (the trainer finishes its step), and
    a hung rank never gets there: SIGKILL follows after at most a second.

    Returns:
        The ranks that had to be stopped.
    """
    _join_all([p for p in processes if p.is_alive()], grace_period)
    running = [p for p in processes if p.is_alive()]
    for process in running:
        process.terminate()
    _join_all(running, min(grace_period, 1.0))
    for process in running:
        if process.is_alive():
            process.kill()
        process.join()
    return [rank for rank, process in enumerate(processes) if process in running]


def _read_error(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as file:
            record: dict[str, Any] = pickle.load(file)
    except (OSError, pickle.UnpicklingError, EOFError):
        return None
    return record


def _describe(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        try:
            return f"was killed by signal {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"was killed by signal {-exit_code}"
    return f"exited with code {exit_code}"


def spawn(
    fn: Callable[..., object],
    nprocs: int,
    *,
    args: tuple[Any, ...] = (),
    backend: str = "auto",
    timeout: float | None = None,
    grace_period: float = 5.0,
) -> None:
    """Run ``fn(*args)`` in ``nprocs`` new processes, one rank each, on this machine.

    Each child starts with the ``"spawn"`` method (safe with CUDA) and finds ``MASTER_ADDR``
    (127.0.0.1), ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``
    and ``GROUP_RANK`` set before ``fn`` runs, so :meth:`TorchDistributed.from_environment`
    joins the group. ``fn`` must be importable by the children (a module-level function).

    Args:
        fn: what each rank runs.
        nprocs: how many processes: one per GPU, or a few CPU processes (tests).
        args: positional arguments of ``fn`` (picklable).
        backend: ``"auto"``, ``"gloo"`` or ``"nccl"``: the default backend of
            ``TorchDistributed.from_environment(backend="auto")`` in the children.
        timeout: the most seconds the whole job may take; ``None`` for no limit.
        grace_period: seconds the other children get to stop by themselves after one fails
            (and again after SIGTERM, before SIGKILL).

    Raises:
        ConfigurationError: a bad argument, or ``fn`` cannot be sent to a child.
        SpawnError: a child failed (the first one, with its rank and traceback), or the job
            ran past ``timeout``. Every child has exited by then.
    """
    _check_arguments(fn, nprocs, backend, timeout, grace_period)
    context = torch.multiprocessing.get_context("spawn")
    # The parent holds the store (port 0: the kernel picks a free port, and the socket stays
    # bound, so no other job can take it); every child connects as a client.
    # TCPStore is public (torch.distributed.TCPStore), imported conditionally: out of mypy's view.
    store = dist.TCPStore(  # type: ignore[attr-defined]
        "127.0.0.1", 0, None, True, timeout=_STORE_TIMEOUT, wait_for_workers=False
    )
    environment = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(store.port),
        "WORLD_SIZE": str(nprocs),
        "LOCAL_WORLD_SIZE": str(nprocs),
        "GROUP_RANK": "0",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "TORCHELASTIC_RESTART_COUNT": "0",
    }
    if backend != "auto":
        environment[BACKEND_VARIABLE] = backend
    deadline = None if timeout is None else time.monotonic() + timeout

    with tempfile.TemporaryDirectory(prefix="helios-spawn-") as folder:
        error_paths = [Path(folder, f"rank{rank}.pickle") for rank in range(nprocs)]
        processes: list[Any] = []
        first_exit: tuple[int, int] | None = None  # (rank, exit code) of the first failure seen
        seen_at: dict[int, float] = {}  # when the parent saw each rank exit
        still_running: list[int] = []
        stopped: list[int] = []
        try:
            for rank in range(nprocs):
                process = context.Process(
                    target=_child_main,
                    args=(rank, environment, os.getpid(), str(error_paths[rank]), fn, args),
                    name=f"helios-rank-{rank}",
                    daemon=False,
                )
                try:
                    process.start()
                except (pickle.PicklingError, AttributeError, TypeError) as error:
                    raise ConfigurationError(
                        f"fn={fn!r} and args cannot be sent to a spawned process: {error}. "
                        "fn must be a module-level function and args picklable"
                    ) from error
                processes.append(process)

            waiting = {process.sentinel: rank for rank, process in enumerate(processes)}
            while waiting and first_exit is None:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = multiprocessing.connection.wait(list(waiting), timeout=remaining)
                if not ready:
                    still_running = sorted(waiting.values())
                    break
                for sentinel in ready:
                    rank = waiting.pop(sentinel)
                    processes[rank].join()
                    seen_at[rank] = time.time()
                    if processes[rank].exitcode != 0 and first_exit is None:
                        first_exit = (rank, processes[rank].exitcode)
        finally:
            # Ranks still running after one failed waiting for them are hung: no grace period.
            waited = first_exit is not None and (_read_error(error_paths[first_exit[0]]) or {}).get(
                "waiting", False
            )
            stopped = _stop(processes, min(grace_period, 1.0) if waited else grace_period)
            del store

        if still_running:
            raise SpawnError(
                f"the spawned job of {nprocs} processes did not finish within {timeout} s; "
                f"ranks {still_running} were still running and were stopped",
            )
        if first_exit is None:
            return

        now = time.time()
        for rank in range(nprocs):
            seen_at.setdefault(rank, now)
        records = {rank: _read_error(path) for rank, path in enumerate(error_paths)}
        raise _blame(processes, records, seen_at, stopped, first_exit)


def _blame(
    processes: Sequence[Any],
    records: dict[int, dict[str, Any] | None],
    seen_at: dict[int, float],
    stopped: list[int],
    first_exit: tuple[int, int],
) -> SpawnError:
    """The error naming the rank whose failure caused the job's, and how it failed.

    The first rank to fail is the cause; the ranks that were waiting for it in a collective fail
    a moment later (each child stamps its failure with the wall clock), and their failures are
    consequences whatever their time. A rank that died without a traceback (a signal, an exit
    status) is dated when the parent saw it go. With nothing but failed collectives, the ranks
    that were still running and had to be stopped are the ones that hung.
    """
    nprocs = len(processes)
    raised = {rank: record for rank, record in records.items() if record is not None}
    causes: list[tuple[float, int]] = []
    for rank, process in enumerate(processes):
        if rank in stopped or process.exitcode == 0:
            continue
        record = raised.get(rank)
        if record is None:
            causes.append((seen_at[rank], rank))
        elif not record.get("waiting", False):
            causes.append((float(record["time"]), rank))
    waiting = sorted(r for r, record in raised.items() if record.get("waiting", False))
    if causes:
        _, rank = min(causes)
        code = processes[rank].exitcode
        others = sorted((set(raised) | {r for _, r in causes}) - {rank})
        also = f" (ranks {others} failed after it)" if others else ""
        later = {other: str(raised[other]["traceback"]) for other in others if other in raised}
        if rank in raised:
            text = str(raised[rank]["traceback"])
            return SpawnError(
                f"rank {rank} of {nprocs} failed{also}; its traceback:\n{text}",
                rank=rank,
                traceback=text,
                exit_code=code,
                later_failures=later,
            )
        return SpawnError(
            f"rank {rank} of {nprocs} {_describe(code)} without a Python traceback{also}",
            rank=rank,
            exit_code=code,
            later_failures=later,
        )
    if waiting and stopped:
        rank = stopped[0]
        waiter = min(waiting, key=lambda r: (raised[r]["time"], r))
        why = _last_line(str(raised[waiter]["traceback"]))
        return SpawnError(
            f"rank {rank} of {nprocs} hung: it was still running when rank {waiter} failed "
            f"waiting for it ({why}), and was stopped"
            + (f" (ranks {stopped[1:]} were stopped too)" if len(stopped) > 1 else ""),
            rank=rank,
            exit_code=processes[rank].exitcode,
            later_failures={r: str(raised[r]["traceback"]) for r in waiting},
        )
    if raised:
        rank = min(raised, key=lambda r: (raised[r]["time"], r))
        text = str(raised[rank]["traceback"])
        others = sorted(set(raised) - {rank})
        also = f" (ranks {others} failed after it)" if others else ""
        return SpawnError(
            f"rank {rank} of {nprocs} failed{also}; its traceback:\n{text}",
            rank=rank,
            traceback=text,
            exit_code=processes[rank].exitcode,
            later_failures={other: str(raised[other]["traceback"]) for other in others},
        )
    rank, code = first_exit
    return SpawnError(
        f"rank {rank} of {nprocs} {_describe(code)} without a Python traceback",
        rank=rank,
        exit_code=code,
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
