"""The one place that knows Helios' concrete packages.

The :class:`~helios.trainer.Trainer` is typed against the protocols of ``helios.core``; this
module builds the defaults from ``helios.ckpt``, ``helios.log``, ``helios.dist`` and
``helios.export``. Every object built here can be replaced by the user's own (the trainer's
``checkpoint_store``, ``metric_logger`` and ``distributed`` arguments).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from helios.ckpt import CheckpointEntry, CheckpointWarning, DirectoryCheckpointStore
from helios.core import CheckpointStore, DistributedContext, ExportTarget, MetricLogger
from helios.dist import TorchDistributed, detect_launcher, spawn
from helios.export import ExportError, ExportReport, export_onnx
from helios.log import (
    LOGGER_NAME,
    MetricLoggerGroup,
    MetricsFileLogger,
    ProgressBar,
    TensorBoardLogger,
    setup_logging,
    teardown_logging,
)

__all__ = [
    "LOGGER_NAME",
    "CheckpointWarning",
    "ExportError",
    "ExportReport",
    "ProgressBar",
    "build_checkpoint_store",
    "build_context",
    "build_metric_logger",
    "export_target",
    "inspect_checkpoints",
    "launched_externally",
    "open_checkpoint_folder",
    "remove_temporary_files",
    "set_aside_checkpoints",
    "spawn_processes",
    "start_logging",
    "stop_logging",
]


def launched_externally() -> bool:
    """Whether torchrun or SLURM started this process as one rank of a job."""
    return detect_launcher().kind != "none"


def build_context(backend: str, timeout: timedelta, device: str | None) -> DistributedContext:
    """Join the process group the environment describes (a group of one without a launcher)."""
    return TorchDistributed.from_environment(backend=backend, timeout=timeout, device=device)


def spawn_processes(
    function: Callable[..., None], nprocs: int, args: tuple[Any, ...], backend: str
) -> None:
    """Run ``function(*args)`` in ``nprocs`` processes that form one process group."""
    spawn(function, nprocs, args=args, backend=backend)


def build_checkpoint_store(
    directory: Path,
    *,
    keep_last: int | None,
    keep_best: int,
    best_metric: str | None,
    best_mode: Literal["min", "max"],
    async_save: bool,
) -> CheckpointStore:
    """The default store: a folder of atomically written, verified checkpoints."""
    return DirectoryCheckpointStore(
        directory,
        keep_last=keep_last,
        keep_best=keep_best,
        best_metric=best_metric,
        best_mode=best_mode,
        async_save=async_save,
    )


def open_checkpoint_folder(directory: Path) -> DirectoryCheckpointStore:
    """A store over an existing folder of checkpoints, for reading them (it prunes nothing)."""
    return DirectoryCheckpointStore(directory, keep_last=None)


def remove_temporary_files(store: CheckpointStore) -> list[tuple[Path, int]]:
    """Delete what killed saves left in the default store's folder (its writer, locked, only)."""
    if isinstance(store, DirectoryCheckpointStore):
        return store.remove_temporary_files()
    return []


def inspect_checkpoints(store: CheckpointStore) -> list[CheckpointEntry] | None:
    """Every entry of the default store's folder with its verdict; ``None`` for other stores."""
    if isinstance(store, DirectoryCheckpointStore):
        return store.inspect()
    return None


def set_aside_checkpoints(
    store: CheckpointStore, after_step: int
) -> tuple[Path, list[Path]] | None:
    """Move the default store's checkpoints after ``after_step`` to a subfolder."""
    if isinstance(store, DirectoryCheckpointStore):
        return store.set_aside(after_step)
    return None


def build_metric_logger(run_dir: Path, *, tensorboard: bool) -> MetricLogger:
    """TensorBoard (optional) and a JSON-lines metrics file (built on global rank 0 only)."""
    loggers: list[MetricLogger] = [MetricsFileLogger(run_dir / "metrics.jsonl")]
    if tensorboard:
        loggers.append(TensorBoardLogger(run_dir / "tensorboard"))
    return MetricLoggerGroup(loggers)


def start_logging(run_dir: Path, context: DistributedContext) -> logging.Logger:
    """Console (rank 0) and per-rank file logging under ``run_dir/logs``."""
    return setup_logging(
        run_dir / "logs",
        rank=context.rank,
        local_rank=context.local_rank,
        node_rank=context.node_rank,
        world_size=context.world_size,
    )


def stop_logging() -> None:
    """Remove the handlers :func:`start_logging` added."""
    teardown_logging()


def export_target(
    target: ExportTarget,
    path: Path,
    *,
    opset: int | None = None,
    verify: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> ExportReport:
    """Export a ``Model``'s export target to ONNX (with ``metadata``), checked in onnxruntime."""
    return export_onnx(
        target.network,
        target.example_inputs,
        path,
        dynamic_batch=target.dynamic_batch,
        input_names=target.input_names,
        output_names=target.output_names,
        opset=opset,
        verify=verify,
        metadata=metadata,
    )
