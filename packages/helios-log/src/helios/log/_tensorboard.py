"""The TensorBoard backend of ``MetricLogger``, written with TensorBoard's own event writer.

Events go through ``torch.utils.tensorboard.SummaryWriter``, so the files are exactly what
TensorBoard expects. Resuming relies on TensorBoard's own rule for restarts: a new event file
that begins with a ``SessionLog.START`` event at step ``T`` (the writer's ``purge_step``) hides
every event of step ``T`` and later from the files read before it. :meth:`TensorBoardLogger.resume`
opens such a file with ``T = checkpoint step + 1``, so the steps logged between the checkpoint
and the crash disappear and the resumed run writes each of them once more.

TensorBoard reads the event files of a folder in the order of their names, which begin with
the creation time in whole seconds; a resumed writer therefore waits, if need be, for the clock
to pass the newest existing file's second, so its purge is read after the events it purges.

Only the main process should write: build the logger with ``enabled=False`` elsewhere and it
creates no file at all.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from helios.core import ConfigurationError, HeliosError
from helios.log._metrics import scalar_value

if TYPE_CHECKING:
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardLogger"]

_EVENT_FILE_PREFIX = "events.out.tfevents."
_HPARAM_METRIC_PREFIX = "hparams/"
_CLOCK_WAIT_LIMIT_S = 5.0  # a newest file further in the future than this is a clock problem
_logger = logging.getLogger(__name__)


def _check_step(step: int, method: str) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigurationError(
            f"TensorBoardLogger.{method}: step must be an int >= 0, got {step!r}"
        )


def _newest_event_second(folder: Path) -> int | None:
    """The creation second encoded in the newest event file name in ``folder``, if any."""
    seconds = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(_EVENT_FILE_PREFIX):
                field = entry.name[len(_EVENT_FILE_PREFIX) :].split(".", 1)[0]
                if field.isdigit():
                    seconds.append(int(field))
    return max(seconds, default=None)


def _hyperparameter_value(value: Any) -> bool | int | float | str | None:
    """A value TensorBoard's hparams plugin can show: numbers and strings as they are."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    return str(value)


class TensorBoardLogger:
    """Scalars, text, hyper-parameters and images in TensorBoard event files.

    Implements :class:`helios.core.MetricLogger`. The event file is opened on first use, so a
    logger that never logs leaves no file behind.

    Example:
        >>> logger = TensorBoardLogger("runs/digits/tensorboard")  # doctest: +SKIP
        >>> logger.resume(40)  # after restarting from the checkpoint of step 40  # doctest: +SKIP
        >>> logger.log_scalars({"train/loss": 0.25}, step=41)  # doctest: +SKIP
        >>> logger.close()  # doctest: +SKIP

    Args:
        log_dir: the folder of the event files (TensorBoard's ``--logdir`` or a run below it).
        enabled: whether to write at all; pass ``context.is_main_process`` so that only global
            rank 0 creates files.
        flush_secs: how often the background writer flushes to disk, in seconds.
        max_queue: how many events are buffered before a flush.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        enabled: bool = True,
        flush_secs: float = 30.0,
        max_queue: int = 100,
    ) -> None:
        if flush_secs <= 0:
            raise ConfigurationError(
                f"TensorBoardLogger: flush_secs must be > 0 seconds, got {flush_secs!r}"
            )
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ConfigurationError(
                f"TensorBoardLogger: max_queue must be an int >= 1, got {max_queue!r}"
            )
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self._flush_secs = flush_secs
        self._max_queue = max_queue
        self._writer: SummaryWriter | None = None
        self._closed = False
        self._last_step = 0

    def _open(self, purge_step: int | None = None) -> SummaryWriter:
        # Imported here: ``import helios.log`` stays cheap for code that only sets up logging.
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(
            log_dir=str(self.log_dir),
            purge_step=purge_step,
            max_queue=self._max_queue,
            flush_secs=self._flush_secs,
        )

    def _get_writer(self, method: str) -> SummaryWriter | None:
        if self._closed:
            raise HeliosError(f"TensorBoardLogger.{method} called after close() on {self.log_dir}")
        if not self.enabled:
            return None
        if self._writer is None:
            self._writer = self._open()
        return self._writer

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Record each metric as a scalar of its own tag at ``step``.

        Args:
            metrics: tag -> value (numbers or one-element tensors).
            step: the optimizer step.
        """
        _check_step(step, "log_scalars")
        values = {name: scalar_value(name, value) for name, value in metrics.items()}
        writer = self._get_writer("log_scalars")
        if writer is None:
            return
        for name, value in values.items():
            writer.add_scalar(name, value, step)
        self._last_step = max(self._last_step, step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Record ``text`` (Markdown) under ``tag`` at ``step``; TensorBoard's text tab shows it."""
        _check_step(step, "log_text")
        writer = self._get_writer("log_text")
        if writer is not None:
            writer.add_text(tag, text, step)

    def log_hyperparameters(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Record the run's hyper-parameters in this run (TensorBoard's HPARAMS tab).

        Numbers, booleans and strings are shown as they are, ``None`` is left out, anything
        else is shown as its ``str``. Each metric is written as the scalar ``hparams/<name>``
        at the last step logged, kept apart from the training curves of the same name.

        Args:
            params: name -> value of each hyper-parameter.
            metrics: the results they led to, if known.
        """
        writer = self._get_writer("log_hyperparameters")
        if writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        hparam_values = {name: _hyperparameter_value(value) for name, value in params.items()}
        metric_values = {
            _HPARAM_METRIC_PREFIX + name: scalar_value(name, value)
            for name, value in (metrics or {}).items()
        }
        # Written into this run's own file, unlike SummaryWriter.add_hparams, which starts a
        # separate run per call and would leave a stray folder on every resume.
        experiment, session_start, session_end = hparams(  # type: ignore[no-untyped-call]
            hparam_values, metric_values
        )
        file_writer = writer._get_file_writer()  # type: ignore[no-untyped-call]
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary, self._last_step)
        for tag, value in metric_values.items():
            writer.add_scalar(tag, value, self._last_step)

    def log_image(
        self,
        tag: str,
        image: torch.Tensor | np.ndarray[Any, Any],
        step: int,
        *,
        dataformats: str = "CHW",
    ) -> None:
        """Record an image under ``tag`` at ``step``.

        Args:
            tag: the image's name.
            image: float values in [0, 1] or uint8 values, laid out as ``dataformats`` says.
            step: the optimizer step.
            dataformats: the layout of ``image``: ``"CHW"``, ``"HWC"`` or ``"HW"``.
        """
        _check_step(step, "log_image")
        if dataformats not in {"CHW", "HWC", "HW"}:
            raise ConfigurationError(
                "TensorBoardLogger.log_image: dataformats must be 'CHW', 'HWC' or 'HW', "
                f"got {dataformats!r}"
            )
        writer = self._get_writer("log_image")
        if writer is not None:
            writer.add_image(tag, image, step, dataformats=dataformats)

    def resume(self, step: int) -> None:
        """Continue after the checkpoint of ``step``: events of later steps are hidden.

        Opens a new event file whose first events tell TensorBoard to drop everything of step
        ``step + 1`` and later from the files before it; what is logged from here on replaces
        them.

        Args:
            step: the step of the checkpoint the run resumed from.
        """
        _check_step(step, "resume")
        if self._closed:
            raise HeliosError(f"TensorBoardLogger.resume called after close() on {self.log_dir}")
        if not self.enabled:
            return
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        newest = _newest_event_second(self.log_dir)
        if newest is not None:
            deadline = time.monotonic() + _CLOCK_WAIT_LIMIT_S
            while int(time.time()) <= newest and time.monotonic() < deadline:
                time.sleep(0.02)
            if int(time.time()) <= newest:
                _logger.warning(
                    "an event file in %s was created in the future (second %d); TensorBoard "
                    "may read the resumed events before the ones they replace",
                    self.log_dir,
                    newest,
                )
        self._writer = self._open(purge_step=step + 1)
        self._last_step = step

    def flush(self) -> None:
        """Write buffered events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (idempotent); the logger is not used afterwards."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._closed = True
