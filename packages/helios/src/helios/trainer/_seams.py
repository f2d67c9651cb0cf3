"""The user's objects at the trainer's seams: built from a factory or taken as given.

The trainer closes only what it built: the default store and loggers, and what a factory
returned. An instance the user passes is used as it is (``wait``/``flush``, never ``close``), so
it survives two ``fit`` calls in a row, or ``fit`` then ``test``.

To cross into processes the trainer spawns, a seam travels pickled: an instance that does not
pickle (a lock, a thread, an open file) is refused with a message that says to pass a factory,
which each process calls to build its own.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator, Mapping
from typing import Any

from helios.core import (
    CheckpointStore,
    ConfigurationError,
    DistributedContext,
    MetricLogger,
    Model,
)
from helios.trainer import _wiring
from helios.trainer._settings import Settings

__all__ = ["NullMetricLogger", "check_picklable", "checkpoint_store", "metric_logger"]


class NullMetricLogger:
    """The metric logger of the ranks other than global rank 0: it records nothing."""

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Do nothing."""

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Do nothing."""

    def log_hyperparameters(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Do nothing."""

    def resume(self, step: int) -> None:
        """Do nothing."""

    def flush(self) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


def _built_store(settings: Settings, model: Model) -> CheckpointStore:
    given = settings.checkpoint_store
    if given is not None:
        store = given(settings.checkpoint_dir)  # type: ignore[operator]
        if not isinstance(store, CheckpointStore):
            raise ConfigurationError(
                f"the checkpoint_store factory returned a {type(store).__name__}, which does "
                "not implement helios.core.CheckpointStore"
            )
        return store
    keep_best = settings.keep_best
    if keep_best is None:
        keep_best = 1 if model.monitor is not None else 0
    if keep_best and model.monitor is None:
        raise ConfigurationError(
            f"keep_best={keep_best} needs {type(model).__name__}.monitor to name a metric"
        )
    return _wiring.build_checkpoint_store(
        settings.checkpoint_dir,
        keep_last=settings.keep_checkpoints,
        keep_best=keep_best,
        best_metric=model.monitor,
        best_mode=model.monitor_mode,
        async_save=settings.async_checkpoints,
    )


@contextlib.contextmanager
def checkpoint_store(settings: Settings, model: Model) -> Iterator[CheckpointStore]:
    """The run's store; closed on exit only when the trainer built it."""
    given = settings.checkpoint_store
    if isinstance(given, CheckpointStore):
        try:
            yield given
        finally:
            given.wait()
        return
    store = _built_store(settings, model)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def metric_logger(settings: Settings, context: DistributedContext) -> Iterator[MetricLogger]:
    """The run's metric logger on global rank 0 (a null one elsewhere); closed only if built."""
    given = settings.metric_logger
    if not context.is_main_process:
        yield NullMetricLogger()
        return
    if isinstance(given, MetricLogger):
        try:
            yield given
        finally:
            given.flush()
        return
    if given is not None:
        built = given(settings.run_dir)
        if not isinstance(built, MetricLogger):
            raise ConfigurationError(
                f"the metric_logger factory returned a {type(built).__name__}, which does not "
                "implement helios.core.MetricLogger"
            )
    else:
        built = _wiring.build_metric_logger(settings.run_dir, tensorboard=settings.tensorboard_on)
    try:
        yield built
    finally:
        built.close()


def check_picklable(settings: Settings, nprocs: int) -> None:
    """Refuse a store or logger instance that cannot travel to ``nprocs`` spawned processes.

    Raises:
        ConfigurationError: naming the argument, the reason and the factory to pass instead.
    """
    for name, kind in (("checkpoint_store", CheckpointStore), ("metric_logger", MetricLogger)):
        given = getattr(settings, name)
        if given is None:
            continue
        what = "instance" if isinstance(given, kind) else "factory"
        try:
            pickle.dumps(given)
        except Exception as exc:
            raise ConfigurationError(
                f"{name}={type(given).__name__} {what} cannot be sent to the {nprocs} processes "
                f"the trainer spawns ({type(exc).__name__}: {exc}); pass a factory instead: a "
                "module-level function or a functools.partial that builds it in each process, "
                f"e.g. {name}=functools.partial({type(given).__name__}, ...)"
            ) from exc
