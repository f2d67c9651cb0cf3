"""How many processes a ``fit`` needs, starting them, and its result in the launching process.

Without a launcher (torchrun, SLURM) and with several devices, the trainer spawns one process
per device on this machine and waits; the parent holds the run folder's lock for them and
reads the run's result from its final checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from helios.core import CheckpointError, CheckpointInfo, ConfigurationError, DataSource, Model
from helios.trainer import _checkpoint, _lock, _seams, _wiring
from helios.trainer._fit import FitResult, run_fit
from helios.trainer._settings import Settings
from helios.trainer._signals import StopSignals

__all__ = [
    "device_kind",
    "latest_checkpoint",
    "named_gpus",
    "process_count",
    "result_after_spawn",
    "run_here",
    "spawn_fit",
]


def named_gpus(settings: Settings) -> bool:
    """Whether ``devices`` is a list of GPU ids."""
    return isinstance(settings.devices, Sequence) and not isinstance(settings.devices, str)


def process_count(settings: Settings) -> int:
    """How many processes ``fit`` starts on this machine.

    Raises:
        ConfigurationError: ``devices`` asks for GPUs that are not there.
    """
    if settings.distributed is not None or _wiring.launched_externally():
        return 1
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = settings.devices
    if devices == "cpu":
        return 1
    if devices == "auto":
        return max(cuda, 1)
    if isinstance(devices, int):
        if cuda and devices > cuda:
            raise ConfigurationError(
                f"devices={devices} asks for more GPUs than the {cuda} visible"
            )
        return devices
    ids = list(devices)
    if not cuda:
        raise ConfigurationError(f"devices={ids} names GPUs, but CUDA is not available")
    if max(ids) >= cuda:
        raise ConfigurationError(f"devices={ids} names a GPU id >= {cuda} (visible GPUs)")
    return len(ids)


def device_kind(settings: Settings) -> str | None:
    """``"cpu"`` when training must run on the CPU; ``None`` lets the context choose."""
    if settings.devices == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return None


def spawn_fit(settings: Settings, model: Model, data: DataSource, nprocs: int) -> None:
    """Run ``fit`` in ``nprocs`` new processes that form one process group, and wait.

    The chosen GPUs become the visible ones, so rank r uses the r-th of them.

    Raises:
        ConfigurationError: a store or logger instance that cannot be sent to the processes.
    """
    _seams.check_picklable(settings, nprocs)
    if named_gpus(settings):
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in settings.devices)  # type: ignore[union-attr]
    _wiring.spawn_processes(_fit_entry, nprocs, (settings, model, data), settings.backend)


def latest_checkpoint(settings: Settings, model: Model) -> CheckpointInfo | None:
    """The newest good checkpoint of the run, before it starts."""
    with _seams.checkpoint_store(settings, model) as store:
        return store.latest()


def result_after_spawn(settings: Settings, model: Model, start: CheckpointInfo | None) -> FitResult:
    """The result of spawned processes, from their final checkpoint; ``model`` gets its weights.

    Raises:
        CheckpointError: the processes left no checkpoint.
    """
    with _seams.checkpoint_store(settings, model) as store:
        info = store.latest()
        if info is None:
            raise CheckpointError(f"training processes left no checkpoint in {settings.run_dir}")
        checkpoint = _checkpoint.load(store, info, map_location="cpu")
    model.setup()
    model.load_state_dict(_checkpoint.model_state(checkpoint, info.path))
    state = _checkpoint.training_state(checkpoint)
    finished = _checkpoint.run_record(checkpoint).finished
    return FitResult(
        state=state,
        complete=finished,
        interrupted=not finished,
        resumed_from=start.path if start is not None else None,
        checkpoint=info.path,
        steps_trained=state.step - (start.step if start is not None else 0),
    )


def run_here(
    settings: Settings, model: Model, data: DataSource, *, prepare: bool, lock: bool = True
) -> FitResult:
    """Train as one rank of the run: join the process group, hold the folder, log, train."""
    context = settings.distributed or _wiring.build_context(
        settings.backend, settings.timeout, device_kind(settings)
    )
    try:
        with _lock.hold_run_folder(settings.run_dir, "fit", context, take=lock):
            logger = _wiring.start_logging(settings.run_dir, context)
            try:
                with StopSignals() as signals:
                    return run_fit(settings, model, data, context, logger, signals, prepare=prepare)
            except BaseException:
                logger.exception(
                    "training failed on rank %d (node %d)", context.rank, context.node_rank
                )
                raise
            finally:
                _wiring.stop_logging()
    finally:
        if settings.distributed is None:
            context.close()


def _fit_entry(settings: Settings, model: Model, data: DataSource) -> None:
    """What each spawned process runs (module level, so it pickles); the parent holds the lock."""
    run_here(settings, model, data, prepare=False, lock=False)
