"""A ``MetricLogger`` that appends JSON lines to a plain file, for tools that are not TensorBoard.

Each call to :meth:`MetricsFileLogger.log_scalars` appends one line,
``{"step": 41, "time": 1764680000.25, "train/loss": 0.25, ...}`` (``time``: when it was logged,
in seconds since the Unix epoch), readable by ``pandas.read_json(path, lines=True)`` or a
ten-line script. Every line is strict JSON: a NaN or infinite value is written as ``null``, and
a warning names the metric (once per metric). Lines reach the operating system as they are
logged, so a killed process loses none; ``flush`` also makes them durable on disk.

Resuming rewrites the file without the records of steps after the checkpoint (and without a
last line torn by a crash), atomically: the new content goes to a temporary file in the same
folder, is fsynced, and replaces the old file with ``os.replace``, so a crash during the rewrite
leaves either the old file or the new one, never a mixture.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from helios.core import ConfigurationError, HeliosError
from helios.log._metrics import scalar_value

__all__ = ["MetricsFileLogger"]

_logger = logging.getLogger(__name__)


def _check_step(step: int, method: str) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigurationError(
            f"MetricsFileLogger.{method}: step must be an int >= 0, got {step!r}"
        )


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old file or the new one."""
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open a folder (Windows) need no folder fsync
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _json_value(value: float) -> float | None:
    """A float as strict JSON allows it: ``None`` (``null``) for NaN and infinities."""
    return value if math.isfinite(value) else None


class MetricsFileLogger:
    """Metrics as JSON lines, one record per :meth:`log_scalars` call.

    Implements :class:`helios.core.MetricLogger`. Text is recorded like a metric whose value is a
    string (``{"step": 3, "samples": "..."}``); hyper-parameters go to a JSON file beside it,
    ``<stem>.hparams.json``.

    Example:
        >>> logger = MetricsFileLogger("runs/digits/metrics.jsonl")  # doctest: +SKIP
        >>> logger.log_scalars({"train/loss": 0.5}, step=1)  # doctest: +SKIP
        >>> logger.close()  # doctest: +SKIP

    Args:
        path: the file to append to (its folder is created if missing).
        enabled: whether to write at all; pass ``context.is_main_process`` so that only global
            rank 0 creates the file.
    """

    def __init__(self, path: str | os.PathLike[str], *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._closed = False
        self._warned_non_finite: set[str] = set()

    @property
    def hyperparameters_path(self) -> Path:
        """Where :meth:`log_hyperparameters` writes: ``<stem>.hparams.json`` beside the file."""
        return self.path.with_name(self.path.stem + ".hparams.json")

    def _append(self, record: Mapping[str, Any], method: str) -> None:
        if self._closed:
            raise HeliosError(f"MetricsFileLogger.{method} called after close() on {self.path}")
        if not self.enabled:
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(json.dumps(record, allow_nan=False) + "\n")
            self._file.flush()  # to the operating system: a killed process loses no line
        except OSError as exc:
            self._abandon_file()
            raise HeliosError(
                f"cannot write the metrics file {self.path}: {exc.strerror or exc} "
                f"(step {record.get('step')}); expected a writable file on a disk with free space"
            ) from exc

    def _abandon_file(self) -> None:
        """Drop a file that failed to take a line, so closing it cannot raise a second error."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Append ``{"step": step, "time": now, name: value, ...}``.

        Integers (not bools) stay integers (``"epoch": 2``); other values are floats, and a
        non-finite one is written as ``null`` with a warning naming the metric.

        Raises:
            ConfigurationError: ``step`` is negative, a metric is called ``"step"`` or a value
                is not a scalar.
        """
        _check_step(step, "log_scalars")
        if "step" in metrics:
            raise ConfigurationError(
                "MetricsFileLogger.log_scalars: a metric may not be called 'step' (the key of "
                "the step in every record)"
            )
        if "time" in metrics:
            raise ConfigurationError(
                "MetricsFileLogger.log_scalars: a metric may not be called 'time' (the key of "
                "the wall time in every record)"
            )
        record: dict[str, Any] = {"step": step, "time": round(time.time(), 3)}
        for name, value in metrics.items():
            if isinstance(value, int) and not isinstance(value, bool):
                record[name] = value
                continue
            number = _json_value(scalar_value(name, value))
            if number is None and name not in self._warned_non_finite:
                self._warned_non_finite.add(name)
                _logger.warning(
                    "%s: metric %r is %s at step %d; written as null (JSON has no NaN or infinity)",
                    self.path,
                    name,
                    scalar_value(name, value),
                    step,
                )
            record[name] = number
        self._append(record, "log_scalars")

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Append ``{"step": step, "time": now, tag: text}``."""
        _check_step(step, "log_text")
        if tag == "step":
            raise ConfigurationError("MetricsFileLogger.log_text: tag may not be 'step'")
        if tag == "time":
            raise ConfigurationError("MetricsFileLogger.log_text: tag may not be 'time'")
        self._append({"step": step, "time": round(time.time(), 3), tag: str(text)}, "log_text")

    def log_hyperparameters(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Write ``{"hyperparameters": ..., "metrics": ...}`` to :attr:`hyperparameters_path`.

        Values JSON cannot hold are written as their ``str``. A later call replaces the file.
        """
        if self._closed:
            raise HeliosError(
                f"MetricsFileLogger.log_hyperparameters called after close() on {self.path}"
            )
        if not self.enabled:
            return
        content = {
            "hyperparameters": {
                name: str(value) if isinstance(value, float) and not math.isfinite(value) else value
                for name, value in params.items()
            },
            "metrics": {
                name: _json_value(scalar_value(name, value))
                for name, value in (metrics or {}).items()
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(
            self.hyperparameters_path,
            json.dumps(content, indent=2, default=str, allow_nan=False) + "\n",
        )

    def resume(self, step: int) -> None:
        """Drop every record of a step after ``step`` (and a torn last line), atomically.

        Args:
            step: the step of the checkpoint the run resumed from.
        """
        _check_step(step, "resume")
        if self._closed:
            raise HeliosError(f"MetricsFileLogger.resume called after close() on {self.path}")
        if not self.enabled:
            return
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise HeliosError(
                f"the metrics file {self.path} is not a regular file; expected a file (or "
                "nothing) there"
            )
        kept: list[str] = []
        unreadable = 0
        with self.path.open(encoding="utf-8") as file:
            for line in file:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    unreadable += 1
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    unreadable += 1
                    continue
                if record["step"] <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        if unreadable:
            _logger.warning(
                "%s: dropped %d unreadable line(s) while resuming at step %d",
                self.path,
                unreadable,
                step,
            )
        _write_atomically(self.path, "".join(kept))

    def flush(self) -> None:
        """Make the lines written so far durable on disk (fsync).

        Raises:
            HeliosError: the file cannot be written (a full disk), naming it.
        """
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                self._abandon_file()
                raise HeliosError(
                    f"cannot write the metrics file {self.path}: {exc.strerror or exc}; "
                    "expected a writable file on a disk with free space"
                ) from exc

    def close(self) -> None:
        """Flush and close the file (idempotent); the logger is not used afterwards."""
        self._closed = True
        if self._file is not None:
            try:
                self.flush()
            finally:
                self._abandon_file()
