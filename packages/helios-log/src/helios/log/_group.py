"""Several ``MetricLogger`` backends behind one.

The trainer holds a single ``MetricLogger``. :class:`MetricLoggerGroup` is that one: it hands
each record to its backends, on global rank 0 only when given a ``DistributedContext``. It does
not reduce: the trainer averages metrics over the ranks itself, once per logging point, and logs
on rank 0 only. Used alone in a distributed program, ``reduce=True`` makes ``log_scalars``
average the scalars over every rank first (a collective every rank must call, with the same
names); everything else (text, hyper-parameters, resume, flush) is rank 0's business alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from helios.core import ConfigurationError, DistributedContext, MetricLogger
from helios.log._metrics import reduce_metrics

__all__ = ["MetricLoggerGroup"]


class MetricLoggerGroup:
    """Forward to several metric loggers (on global rank 0), averaging across ranks if asked.

    Implements :class:`helios.core.MetricLogger`.

    Example:
        >>> group = MetricLoggerGroup(  # doctest: +SKIP
        ...     [
        ...         TensorBoardLogger(run / "tensorboard", enabled=context.is_main_process),
        ...         MetricsFileLogger(run / "metrics.jsonl", enabled=context.is_main_process),
        ...     ],
        ...     context=context,
        ...     reduce=True,  # standalone: average over the ranks here (the trainer does not)
        ... )
        >>> group.log_scalars({"train/loss": loss}, step=state.step)  # every rank  # doctest: +SKIP

    Args:
        loggers: the backends, each a :class:`~helios.core.MetricLogger`.
        context: the process group (records are written on its global rank 0 only);
            ``None`` for a single process.
        reduce: average the scalars of ``log_scalars`` over the ranks of ``context`` first
            (then every rank must call it). ``False`` (what the trainer uses): record them as
            given.

    Raises:
        ConfigurationError: an element of ``loggers`` is not a ``MetricLogger``.
    """

    def __init__(
        self,
        loggers: Sequence[MetricLogger],
        *,
        context: DistributedContext | None = None,
        reduce: bool = False,
    ) -> None:
        for index, logger in enumerate(loggers):
            if not isinstance(logger, MetricLogger):
                raise ConfigurationError(
                    f"MetricLoggerGroup: loggers[{index}] must implement helios.core."
                    f"MetricLogger, got {type(logger).__name__}"
                )
        self._loggers = tuple(loggers)
        self._context = context
        self._reduce = reduce

    @property
    def loggers(self) -> tuple[MetricLogger, ...]:
        """The backends, in the order they receive each record."""
        return self._loggers

    @property
    def _is_main_process(self) -> bool:
        return self._context is None or self._context.is_main_process

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` on rank 0; with ``reduce``, their mean over the ranks (collective)."""
        reduced = reduce_metrics(metrics, self._context) if self._reduce else metrics
        if self._is_main_process:
            for logger in self._loggers:
                logger.log_scalars(reduced, step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Record rank 0's ``text`` in every backend; other ranks do nothing."""
        if self._is_main_process:
            for logger in self._loggers:
                logger.log_text(tag, text, step)

    def log_hyperparameters(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Record rank 0's hyper-parameters in every backend; other ranks do nothing."""
        if self._is_main_process:
            for logger in self._loggers:
                logger.log_hyperparameters(params, metrics)

    def log_image(self, tag: str, image: torch.Tensor, step: int, **kwargs: Any) -> None:
        """Record rank 0's image in every backend that has ``log_image`` (TensorBoard)."""
        if self._is_main_process:
            for logger in self._loggers:
                log_image = getattr(logger, "log_image", None)
                if log_image is not None:
                    log_image(tag, image, step, **kwargs)

    def resume(self, step: int) -> None:
        """Resume every backend after the checkpoint of ``step``, on rank 0 only."""
        if self._is_main_process:
            for logger in self._loggers:
                logger.resume(step)

    def flush(self) -> None:
        """Flush every backend, on rank 0 only."""
        if self._is_main_process:
            for logger in self._loggers:
                logger.flush()

    def close(self) -> None:
        """Close every backend on every rank (releasing is never wrong; a disabled one no-ops).

        Every backend is closed even when one fails; the first failure is raised afterwards.
        """
        failure: BaseException | None = None
        for logger in self._loggers:
            try:
                logger.close()
            except Exception as error:  # re-raised below, once the others are closed
                failure = failure or error
        if failure is not None:
            raise failure
