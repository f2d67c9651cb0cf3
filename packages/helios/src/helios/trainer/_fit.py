"""One ``fit`` in one process: set-up, resume or start, the loop, and clean-up.

Set-up runs in a fixed order that exact resume depends on: the seed, then the data, then the
model (whose weights the seed draws), then the run's store, logger and callbacks; resuming
restores every checkpoint part after all of that. Clean-up gives the model its own networks
back and closes only what the trainer built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

from torch import nn

from helios.core import (
    CheckpointStore,
    ConfigurationError,
    DataSource,
    DistributedContext,
    Model,
    TrainingState,
    check_model_setup,
    seed_everything,
    set_deterministic,
)
from helios.trainer import _hparams, _seams, _wiring
from helios.trainer._callbacks import Callbacks, default_callbacks
from helios.trainer._compile import compile_networks, uncompile
from helios.trainer._fsdp import ShardedModel
from helios.trainer._loop import FitLoop
from helios.trainer._resume import resume_or_start
from helios.trainer._settings import Settings
from helios.trainer._signals import StopSignals

__all__ = ["FitResult", "check_optimisation", "run_fit"]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """How a call to :meth:`Trainer.fit` ended.

    Attributes:
        state: the training state at the end.
        complete: training reached its end (``total``, early stopping, or
            ``should_training_stop``); running ``fit`` again does nothing.
        interrupted: a stop signal ended training early; running ``fit`` again resumes.
        resumed_from: the checkpoint training resumed from, if any.
        checkpoint: the last checkpoint written, if any.
        steps_trained: optimizer steps taken by this call (0 for a run already complete).
    """

    state: TrainingState
    complete: bool
    interrupted: bool
    resumed_from: Path | None = None
    checkpoint: Path | None = None
    steps_trained: int = 0


def check_optimisation(settings: Settings, model: Model) -> None:
    """Refuse settings that only automatic optimisation applies, for a model optimising itself.

    Raises:
        ConfigurationError: ``accumulate`` or ``clip_grad_norm`` with manual optimisation.
    """
    if type(model).automatic_optimization:
        return
    if settings.accumulate != 1:
        raise ConfigurationError(
            "accumulate must be 1 for a model that optimises itself "
            "(automatic_optimization = False)"
        )
    if settings.clip_grad_norm is not None:
        raise ConfigurationError(
            "clip_grad_norm is applied by automatic optimisation only; a model with "
            "automatic_optimization = False clips in its own train_step"
        )


def _wrap_networks(model: Model, context: DistributedContext) -> None:
    """Wrap every network with trainable parameters for DDP (a no-op in one process)."""
    if not context.is_distributed:
        return
    for name, network in model.networks().items():
        if any(p.requires_grad for p in network.parameters()):
            setattr(model, name, context.wrap(network))


def _give_networks_back(model: Model, networks: dict[str, nn.Module]) -> None:
    """Give the model the networks its setup made, so no DDP wrapper outlives the process group.

    Only what the trainer put around them is removed: a network the user compiled (or wrapped)
    in ``setup`` stays as the user made it.
    """
    for name, network in networks.items():
        setattr(model, name, network)


def _shard(
    settings: Settings, model: Model, context: DistributedContext, logger: logging.Logger
) -> ShardedModel | None:
    """Shard the networks for ``strategy="fsdp"`` over several processes (before resuming)."""
    fsdp = settings.fsdp
    if fsdp is None:
        return None
    if not context.is_distributed:
        logger.info("strategy='fsdp' with one process: the networks train unsharded")
        return None
    return ShardedModel(model, context, fsdp, settings.precision, logger)


def _remove_temporary_files(store: CheckpointStore, logger: logging.Logger) -> None:
    """Delete what killed saves left, so a crash loop cannot fill the disk.

    Only rank 0 calls this: it holds the run folder's lock, or its parent does.
    """
    removed = _wiring.remove_temporary_files(store)
    if removed:
        logger.warning(
            "removed %d temporary file(s) left by interrupted checkpoint saves (%d bytes): %s",
            len(removed),
            sum(size for _, size in removed),
            ", ".join(path.name for path, _ in removed),
        )


def run_fit(
    settings: Settings,
    model: Model,
    data: DataSource,
    context: DistributedContext,
    logger: logging.Logger,
    signals: StopSignals,
    *,
    prepare: bool,
) -> FitResult:
    """Train in this process (one rank of the run); see :mod:`helios.trainer._loop`."""
    check_optimisation(settings, model)
    callbacks = Callbacks(
        default_callbacks(
            settings.callbacks,
            early_stop_patience=settings.early_stop_patience,
            progress=settings.progress,
            non_finite=settings.non_finite,
            track_performance=settings.track_performance,
        )
    )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    if prepare:
        if context.is_local_main_process:
            data.prepare_data()
        context.barrier()
    if settings.deterministic:
        set_deterministic(True)
    seed_everything(settings.seed)
    data.configure(rank=context.rank, world_size=context.world_size, seed=settings.seed)
    data.setup()
    model.setup()
    if context.is_main_process:
        check_model_setup(model)  # warnings only: what will not be moved or saved
    model.to(context.device)
    sharded = _shard(settings, model, context, logger)
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(_seams.checkpoint_store(settings, model))
        if context.is_main_process:
            _remove_temporary_files(store, logger)
        metric_logger = stack.enter_context(_seams.metric_logger(settings, context))
        loop = FitLoop(
            settings,
            model,
            data,
            context,
            logger,
            signals,
            store,
            metric_logger,
            callbacks,
            hparams=_hparams.run_hyperparameters(settings, model, context.world_size),
            sharded=sharded,
        )
        stack.callback(_give_networks_back, model, model.networks())
        stack.callback(callbacks.call, "on_fit_exit", loop.view, model)
        finished_before = resume_or_start(loop)
        resumed_from = loop.last_checkpoint
        start_step = loop.state.step
        # A run that reached its end but was stopped before the end-of-run work (final
        # validation, on_training_end, the finished checkpoint) goes on to do it.
        if loop.complete() and finished_before:
            logger.info(
                "the run in %s is already complete (step %d, epoch %d): nothing to train",
                settings.run_dir,
                loop.state.step,
                loop.state.epoch,
            )
            loop.record.finished = True
        else:
            # compile each network (or block) first, then wrap; sharded networks (FSDP) were
            # sharded before resuming and are compiled as they are
            stack.callback(uncompile, compile_networks(model, settings.compile))
            if sharded is None:
                _wrap_networks(model, context)
            loop.train()
        return FitResult(
            state=dataclasses.replace(loop.state),
            complete=loop.record.finished,
            interrupted=loop.interrupted,
            resumed_from=resumed_from,
            checkpoint=loop.last_checkpoint,
            steps_trained=loop.state.step - start_step,
        )
