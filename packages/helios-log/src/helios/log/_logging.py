"""Rank-aware set-up of Python's ``logging`` for a training run.

Every Helios module logs to the ``"helios"`` logger (or a child of it). :func:`setup_logging`
decides where those records go in a run of many processes:

- the console (stderr) shows them on global rank 0 only, so N processes do not print N copies;
- each rank has its own file, ``<log_dir>/rank-<r>.log``: rank 0's holds everything at ``level``
  and above, the others' hold warnings, errors and exceptions. Every line of every file - the
  lines of a traceback too - starts with the rank and node, so a failure on rank 5 of node 2 is
  never lost and ``grep`` over the files of several nodes still says where each line came from;
- Python warnings can be captured into the same handlers.

A record that carries an exception (:func:`log_exception`, ``logger.exception``) keeps its
traceback in the rank's file; the console shows its message and the exception's last line, and
says which file holds the traceback. The trainer logs an error, then re-raises it, and Python
prints the traceback on the console: once, not twice.

The trainer calls :func:`setup_logging` at the start of every ``fit()``; calling it again
replaces the handlers it added before instead of adding a second set, so a message is never
written twice. Console output goes through tqdm's write lock so that log lines and progress bars
do not tear each other apart on the terminal, while the bars themselves never reach a handler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
from pathlib import Path
from types import TracebackType

from tqdm import tqdm

from helios.core import ConfigurationError

__all__ = ["LOGGER_NAME", "log_exception", "setup_logging", "teardown_logging"]

LOGGER_NAME = "helios"
"""The name of the logger every Helios module logs under."""

_WARNINGS_LOGGER_NAME = "py.warnings"  # where logging.captureWarnings sends warnings
_FILE_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
_CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class _RankFormatter(logging.Formatter):
    """Prefix every line of a record, traceback lines included, with the rank and node."""

    def __init__(self, prefix: str) -> None:
        super().__init__(_FILE_FORMAT, datefmt=_DATE_FORMAT)
        self._prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` and put the rank prefix before each of its lines."""
        text = super().format(record)
        return "\n".join(self._prefix + line for line in text.splitlines())


class _ConsoleFormatter(logging.Formatter):
    """The console's format: an exception as one line and where its traceback is, no traceback."""

    def __init__(self, log_file: Path) -> None:
        super().__init__(_CONSOLE_FORMAT, datefmt=_DATE_FORMAT)
        self._log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``; an exception's traceback is left to the file (and the raise)."""
        if not record.exc_info:
            return super().format(record)
        error = record.exc_info[1]
        short = logging.makeLogRecord(record.__dict__)
        short.exc_info = short.exc_text = None
        text = super().format(short)
        if error is not None:
            last = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            text += f": {last.splitlines()[0] if last else ''}"
        return f"{text} (traceback in {self._log_file})"


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that clears tqdm bars while it writes, then lets them redraw."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` without mixing it into a progress bar's line."""
        with tqdm.external_write_mode(file=self.stream):
            super().emit(record)


@dataclasses.dataclass
class _Installed:
    """What the last :func:`setup_logging` changed, so that it can be undone exactly."""

    handlers: list[tuple[logging.Logger, logging.Handler]]
    previous: dict[str, tuple[int, bool]]  # logger name -> (level, propagate) before set-up
    captured_warnings: bool


_lock = threading.Lock()
_installed: _Installed | None = None


def _check_rank_arguments(rank: int, local_rank: int, node_rank: int, world_size: int) -> None:
    for name, value in (("rank", rank), ("local_rank", local_rank), ("node_rank", node_rank)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"setup_logging: {name} must be an int >= 0, got {value!r}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigurationError(
            f"setup_logging: world_size must be an int >= 1, got {world_size!r}"
        )
    if rank >= world_size:
        raise ConfigurationError(
            f"setup_logging: rank must be smaller than world_size={world_size}, got {rank!r}"
        )


def setup_logging(
    log_dir: str | os.PathLike[str],
    *,
    rank: int = 0,
    local_rank: int = 0,
    node_rank: int = 0,
    world_size: int = 1,
    level: int = logging.INFO,
    capture_warnings: bool = True,
    console: bool = True,
) -> logging.Logger:
    """Send the ``"helios"`` logger's records to the console of rank 0 and to a file per rank.

    Calling it again (another ``fit()`` in the same process) first removes what the previous
    call added, so each message is written exactly once, to the newest ``log_dir``.

    Args:
        log_dir: folder of the log files (created if missing); this rank writes
            ``rank-<rank>.log`` in it, appending to what an earlier run left there.
        rank: this process's global rank.
        local_rank: this process's rank on its node.
        node_rank: the index of this process's node.
        world_size: how many processes train together.
        level: the lowest level logged. Ranks other than 0 log ``WARNING`` and above
            whatever ``level`` says lower, so their files hold what went wrong, not N copies of
            rank 0's progress.
        capture_warnings: route Python warnings (``warnings.warn``) into the same handlers.
        console: show records on stderr; only global rank 0 ever does.

    Returns:
        The ``"helios"`` logger.

    Raises:
        ConfigurationError: a rank, the world size or the level is not valid.
    """
    global _installed  # noqa: PLW0603 - one set of handlers per process, by design
    _check_rank_arguments(rank, local_rank, node_rank, world_size)
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ConfigurationError(
            f"setup_logging: level must be a logging level such as logging.INFO, got {level!r}"
        )
    folder = Path(log_dir)
    with _lock:
        _teardown_locked()
        folder.mkdir(parents=True, exist_ok=True)

        prefix = f"[rank {rank}/{world_size} node {node_rank} local {local_rank}] "
        # Rank 0's file exists from the start; another rank's only once it has a problem to
        # report, so a healthy run of 64 processes leaves one file, not 64.
        file_handler = logging.FileHandler(
            folder / f"rank-{rank}.log", mode="a", encoding="utf-8", delay=rank != 0
        )
        file_handler.setLevel(level if rank == 0 else max(level, logging.WARNING))
        file_handler.setFormatter(_RankFormatter(prefix))
        handlers: list[logging.Handler] = [file_handler]
        if console and rank == 0:
            console_handler = _ConsoleHandler(sys.stderr)
            console_handler.setLevel(level)
            console_handler.setFormatter(_ConsoleFormatter(folder / f"rank-{rank}.log"))
            handlers.append(console_handler)

        logger = logging.getLogger(LOGGER_NAME)
        targets = [logger]
        if capture_warnings:
            targets.append(logging.getLogger(_WARNINGS_LOGGER_NAME))
        installed = _Installed(handlers=[], previous={}, captured_warnings=capture_warnings)
        for target in targets:
            installed.previous[target.name] = (target.level, target.propagate)
            # The records stop here: a handler the application put on the root logger would
            # otherwise print every message a second time.
            target.propagate = False
            for handler in handlers:
                target.addHandler(handler)
                installed.handlers.append((target, handler))
        logger.setLevel(level)
        if capture_warnings:
            logging.captureWarnings(True)
        _installed = installed
    return logger


def _teardown_locked() -> None:
    global _installed
    installed, _installed = _installed, None
    if installed is None:
        return
    closed: set[int] = set()
    for target, handler in installed.handlers:
        target.removeHandler(handler)
        if id(handler) not in closed:
            closed.add(id(handler))
            handler.close()
    for name, (level, propagate) in installed.previous.items():
        target = logging.getLogger(name)
        target.setLevel(level)
        target.propagate = propagate
    if installed.captured_warnings:
        logging.captureWarnings(False)


def teardown_logging() -> None:
    """Remove and close the handlers :func:`setup_logging` added; a no-op without them.

    The loggers get back the level and propagation they had before, and Python warnings go
    back to stderr if :func:`setup_logging` had captured them.
    """
    with _lock:
        _teardown_locked()


def log_exception(
    logger: logging.Logger | None,
    exc: BaseException,
    *,
    message: str | None = None,
) -> None:
    """Log ``exc`` with its traceback at ``ERROR`` on this rank, once.

    Meant for an ``except`` clause that re-raises: the exception reaches this rank's log file
    even when the process is then killed before its traceback is printed. An exception already
    logged by this function (by an inner ``except``) is not logged again.

    Args:
        logger: where to log; ``None`` means the ``"helios"`` logger.
        exc: the exception, with the traceback it was raised with.
        message: the line before the traceback; by default names the exception type.
    """
    if getattr(exc, "_helios_logged", False):
        return
    target = logger if logger is not None else logging.getLogger(LOGGER_NAME)
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None] = (
        type(exc),
        exc,
        exc.__traceback__,
    )
    target.error(message or f"{type(exc).__name__} raised", exc_info=exc_info)
    # An exception type with __slots__ takes no mark: it would be logged twice, no worse.
    with contextlib.suppress(AttributeError):
        exc._helios_logged = True  # type: ignore[attr-defined]
