"""The run folder's lock: one ``fit``, ``test`` or ``export`` of a ``run_dir`` at a time.

Two processes writing one run folder (a job launched twice) would delete each other's
temporary files, resume from each other's checkpoints and rewrite each other's
``metrics.jsonl``. So each of them first takes an exclusive ``flock`` on ``run_dir/.helios.lock``
and writes its PID and host into it; a second process is refused with
:class:`~helios.core.RunFolderLockedError` naming them. The lock is the operating system's: it
ends with the process however it ends (a crash, SIGKILL), so it is never stale, and the file
left behind means nothing by itself.

In a distributed job one process holds the lock for all: the process that spawned the ranks,
or global rank 0 under torchrun or SLURM, which tells the other ranks whether it got it (so
a refused job fails on every rank instead of leaving ranks waiting).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from helios.core import ConfigurationError, DistributedContext, RunFolderLockedError

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder is not locked there
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "hold_run_folder", "lock_run_folder"]

#: The lock file's name inside ``run_dir``.
LOCK_FILE = ".helios.lock"

_guard = threading.Lock()
_held: dict[Path, int] = {}  # folders this process holds, and how many times (re-entrant)


def _create_folder(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"run_dir {str(run_dir)!r} cannot be created ({exc.strerror or exc}); expected a "
            "writable folder for checkpoints, logs and metrics"
        ) from exc


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it (it may be writing it just now)."""
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            raw = os.pread(fd, 4096, 0)
            if raw:
                record = json.loads(raw)
                return (
                    f"{record['purpose']} in process {record['pid']} on host {record['host']} "
                    f"(since {record['since']})"
                )
        time.sleep(0.05)
    return "another process (it has not written its PID yet)"


@contextlib.contextmanager
def lock_run_folder(run_dir: Path, purpose: str, *, writable: bool = True) -> Iterator[None]:
    """Hold ``run_dir`` exclusively for this process until the block ends.

    Re-entrant within one process (``test`` from inside a ``fit`` of the same folder).

    Args:
        run_dir: the run folder; created if missing.
        purpose: what this process does there (``"fit"``, ``"test"``, ``"export"``), for the
            message another process gets.
        writable: whether this process needs to write the folder. ``False`` (an export that
            only reads a checkpoint) goes ahead unlocked in a folder it cannot write, where it
            cannot take a lock either.

    Raises:
        RunFolderLockedError: another process holds the folder.
        ConfigurationError: the folder cannot be created or written (a read-only filesystem).
    """
    if not writable and run_dir.is_dir() and not os.access(run_dir, os.W_OK):
        yield
        return
    _create_folder(run_dir)
    key = run_dir.resolve()
    with _guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    if fcntl is None:
        yield
        return
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise ConfigurationError(
            f"run_dir {str(run_dir)!r} is not writable: cannot create its lock file {path} "
            f"({exc.strerror or exc}); expected a writable folder for checkpoints, logs and "
            "metrics"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunFolderLockedError(
                f"run_dir {str(run_dir)!r} is in use by {_holder(fd)}; refusing to {purpose} "
                "there at the same time. Wait for it to end, stop it, or use another run_dir "
                f"(the lock on {path} is the operating system's and ends with that process)"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": purpose,
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                del _held[key]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_run_folder(
    run_dir: Path, purpose: str, context: DistributedContext, *, take: bool = True
) -> Iterator[None]:
    """The job's lock on ``run_dir``: taken by global rank 0, its outcome agreed by all ranks.

    Args:
        run_dir: the run folder.
        purpose: what the job does there, for the message another process gets.
        context: the job's process group (its first collective is this agreement).
        take: ``False`` in processes whose parent already holds the lock (spawned ranks).

    Raises:
        RunFolderLockedError: another process holds the folder (raised on every rank).
        ConfigurationError: the folder cannot be created or written (on every rank).
    """
    if not take:
        yield
        return
    with contextlib.ExitStack() as stack:
        failure: str | None = None
        kind = ""
        if context.is_main_process:
            try:
                stack.enter_context(lock_run_folder(run_dir, purpose))
            except (RunFolderLockedError, ConfigurationError) as exc:
                if not context.is_distributed:
                    raise
                failure, kind = str(exc), type(exc).__name__
        if context.is_distributed:
            failure, kind = context.broadcast_object((failure, kind), src=0)
            if failure is not None:
                if kind == "RunFolderLockedError":
                    raise RunFolderLockedError(failure)
                raise ConfigurationError(failure)
        yield
