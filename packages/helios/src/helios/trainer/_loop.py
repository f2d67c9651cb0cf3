"""The fit loop: epochs of batches, and what happens after each optimizer step.

The order of hooks and decisions, in one process (every rank runs the same)::

    model.on_training_start(); callbacks.on_training_start
    while not complete and not interrupted:                      # complete: total reached,
        data.set_epoch(epoch); loader = data.train_dataloader()  #   should_training_stop, or
        model.on_training_epoch_start(epoch); callbacks.…        #   a callback's stop (early
        for batch in loader:                                     #   stopping)
            model.on_training_batch_start(state); callbacks.…
            forward, backward (no_sync inside an accumulation window)
            at a window's end: unscale, clip, optimizer.step, zero_grad, scheduler.step
            model.on_training_batch_end(state); callbacks.…
            if the window ended and the epoch did not:  after_step(epoch_done=False)
        after_step(epoch_done=True)
    if not interrupted:
        log the last, partial window of training means, if any
        model.on_training_end(); callbacks.on_training_end
        validate, unless this step was validated
    checkpoint, unless this step has one (always when finished); the summary line
    callbacks.on_fit_exit                                        # also after an exception

    after_step(epoch_done):
        every log_every steps: the training means (one all-reduce), callbacks.collect_metrics,
            log them, callbacks.on_log
        unit="iteration": every valid_every steps validate; checkpoint due every
            checkpoint_every steps
        epoch_done: model.on_training_epoch_end(epoch); callbacks.…; epoch schedulers; epoch += 1
            validate (valid_every=None, or unit="epoch" on its cadence), unless just validated
            checkpoint due likewise
        checkpoint if due                  # after all of the step's work: a resume repeats none
        stop? (a signal, or model.should_training_stop(), agreed over ranks in one collective)

    validate:
        model.on_validation_start(cycle); callbacks.…   # once per validation point
        for each validation set, in the order added: valid_step over its loader
        (metrics weighted by samples, one all-reduce per set); log them merged
        model.on_validation_end(cycle); callbacks.on_validation_end (early stopping counts)
        ReduceLROnPlateau.step(monitor)

A stop signal ends the current step, writes a checkpoint and returns ``interrupted``; an
exception writes none (the state may be half-updated).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sized
from pathlib import Path
from typing import Any

import torch

from helios.core import (
    CheckpointStore,
    ConfigurationError,
    DataSource,
    DistributedContext,
    MetricLogger,
    Model,
    ResumeError,
    ShardedCheckpointStore,
    TrainingState,
    capture_rng_state,
    restore_rng_state,
)
from helios.trainer import _checkpoint, _report
from helios.trainer._callbacks import Callbacks, TrainerState
from helios.trainer._config import config_sha256, without_run_dir
from helios.trainer._evaluate import valid_loaders, validate_sets
from helios.trainer._fsdp import ShardedModel
from helios.trainer._metrics import RunningMeans, reduce_once
from helios.trainer._non_finite import NonFiniteLossGuard
from helios.trainer._precision import Precision
from helios.trainer._settings import Settings
from helios.trainer._signals import StopSignals
from helios.trainer._step import TrainStep

__all__ = ["FitLoop"]


class _Value:
    """A value as a checkpoint part (what ``state_dict`` returns is the value itself)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def state_dict(self) -> Any:
        return self.value

    def load_state_dict(self, value: Any) -> None:
        self.value = value


class FitLoop:
    """The loop of one ``fit`` in one process, over a model that is set up and on its device."""

    def __init__(
        self,
        settings: Settings,
        model: Model,
        data: DataSource,
        context: DistributedContext,
        logger: logging.Logger,
        signals: StopSignals,
        store: CheckpointStore | None,
        metric_logger: MetricLogger,
        callbacks: Callbacks,
        hparams: Mapping[str, Any] | None = None,
        *,
        sharded: ShardedModel | None = None,
    ) -> None:
        self.settings, self.model, self.data, self.context = settings, model, data, context
        self.sharded = sharded  # FSDP: the checkpoint part of the model, gathered by every rank
        self.logger, self.signals, self.store = logger, signals, store
        self.metric_logger, self.callbacks = metric_logger, callbacks
        self.device = context.device
        self.state = TrainingState()
        self.view = TrainerState(
            self.state, settings, is_main_process=context.is_main_process, distributed=context
        )
        self.automatic = type(model).automatic_optimization
        # Under FSDP, bf16 is the sharding's MixedPrecisionPolicy, not autocast.
        precision = "32" if sharded is not None else settings.precision
        self.precision = Precision(precision, self.device, model, automatic=self.automatic)
        self.train_means = RunningMeans(self.device)
        self.view.unlogged = self.train_means
        self.record = _checkpoint.RunRecord(
            settings.unit,
            settings.total,
            settings.accumulate,
            context.world_size,
            monitor=model.monitor,
            monitor_mode=model.monitor_mode,
            hparams=dict(hparams or {}),
        )
        if settings.config is not None:
            self.record.config_sha256 = config_sha256(settings.config)
            self.record.config = without_run_dir(settings.config)
        self.last_checkpoint_step: int | None = None
        self.last_checkpoint: Path | None = None
        self.epoch_start_rng: dict[str, Any] | None = None
        self.interrupted = False
        self.started = time.monotonic()

    def parts(self, rng: list[Any], epoch_start_rng: list[Any]) -> dict[str, Any]:
        """The checkpoint parts of this run (``rng``: every rank's, gathered)."""
        return {
            "model": self.model if self.sharded is None else self.sharded,
            "training_state": self.state,
            "data": self.data,
            "rng": _Value(rng),
            "epoch_start_rng": _Value(epoch_start_rng),
            "scaler": self.precision,
            "train_means": self.train_means,
            "callbacks": self.callbacks,
            "trainer": self.record,
        }

    def complete(self) -> bool:
        """Whether training reached its end (a stop signal is not an end)."""
        settings, state = self.settings, self.state
        if settings.unit == "iteration" and state.step >= settings.total:
            return True
        if settings.unit == "epoch" and state.epoch >= settings.total:
            return True
        return self.record.stopped_by_model or self.callbacks.should_training_stop(
            self.view, self.model
        )

    def _hook(self, name: str, *args: Any) -> None:
        """The model's hook ``name``, then the callbacks'."""
        getattr(self.model, name)(*args)
        self.callbacks.call(name, self.view, self.model)

    # ---- the loop ---------------------------------------------------------------------------

    def train(self) -> None:
        """Train until complete or interrupted, then the end-of-run work and its checkpoint."""
        self.step = TrainStep(
            self.model,
            self.state,
            self.precision,
            self.context,
            self.settings.clip_grad_norm,
            no_sync=None if self.sharded is None else self.sharded.no_sync,
        )
        if any(
            isinstance(callback, NonFiniteLossGuard) and callback.mode == "skip"
            for callback in self.callbacks.callbacks
        ):
            self.step.skip_non_finite_into = self.record
        self.view.skipped_steps = self.record.skipped_steps
        self.model.train()
        self._hook("on_training_start")
        while not self.complete() and not self.interrupted:
            self._train_epoch()
        if not self.interrupted:
            self.record.finished = True
            self._log_training()  # the last, partial window (a stopped run's goes on after resume)
            self._hook("on_training_end")
            if self.record.last_valid_step != self.state.step:
                self._validate()
        if self.last_checkpoint_step != self.state.step or self.record.finished:
            self._checkpoint()
        if self.store is not None:
            self.store.wait()
        if self.context.is_main_process:
            _report.summary(self, time.monotonic() - self.started)

    def _loader(self) -> tuple[Any, int]:
        """The training loader of this epoch and the number of batches it has left."""
        loader = self.data.train_dataloader()
        name = type(self.data).__name__
        if loader is None:
            raise ConfigurationError(f"{name} has no training data")
        if not isinstance(loader, Sized):
            raise ConfigurationError(
                f"datamodule: {name}.train_dataloader() returned a {type(loader).__name__} "
                "without len(); expected a helios.core.SizedIterable: the trainer needs the "
                "number of batches left in the epoch"
            )
        return loader, len(loader)

    def _train_epoch(self) -> None:
        state, accumulate = self.state, self.settings.accumulate
        self.data.set_epoch(state.epoch)
        loader, left = self._loader()
        epoch_length = state.batch_in_epoch + left
        if epoch_length == 0:
            raise ConfigurationError(f"{type(self.data).__name__} yields no training batches")
        self.view.epoch_length = epoch_length
        if left == 0:  # a checkpoint of an older format, written before its epoch-end work
            self._after_step(epoch_done=True, step_done=False)
            return
        self._start_epoch()
        window_start = state.batch_in_epoch
        view, clock = self.view, time.perf_counter
        waited = clock()
        batches = iter(loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            # The host's wait for the loader: two clock reads a batch, no device sync.
            view.data_wait += clock() - waited
            view.samples += batch_size(batch)
            window = min(accumulate, epoch_length - window_start)
            last_in_window = state.batch_in_epoch + 1 - window_start == window
            self._hook("on_training_batch_start", state)
            metrics = self.step.train_batch(batch, window=window, last_in_window=last_in_window)
            if not self.step.skipped_batch:
                self.train_means.add(metrics)
            view.forward_time = self.step.forward_seconds
            self._hook("on_training_batch_end", state)
            waited = clock()
            if not last_in_window:
                continue
            window_start = state.batch_in_epoch
            if state.batch_in_epoch == epoch_length:
                continue  # the loader ends here (its workers with it); the epoch's end follows
            if self._after_step(epoch_done=False):
                return
            waited = clock()
        if state.batch_in_epoch != epoch_length:
            raise ResumeError(
                f"the training loader ended after {state.batch_in_epoch} of {epoch_length} "
                "batches of the epoch"
            )
        self._after_step(epoch_done=True)

    def _start_epoch(self) -> None:
        """Call ``on_training_epoch_start``; on a resume inside the epoch, exactly as it ran first.

        At an epoch's start the RNG state is captured before the hook (and checkpointed). A run
        resumed inside the epoch calls the hook again, so that what it sets up (a curriculum, a
        mask, frozen layers) is there again, with the RNG state of the epoch's start: it draws
        what it drew the first time. The checkpoint's RNG state is put back afterwards, so the
        next batch draws exactly what the uninterrupted run drew.
        """
        state = self.state
        if state.batch_in_epoch == 0:
            self.epoch_start_rng = capture_rng_state()
            self._hook("on_training_epoch_start", state.epoch)
            return
        resumed_rng = capture_rng_state()
        if self.epoch_start_rng is not None:
            restore_rng_state(self.epoch_start_rng)
        self._hook("on_training_epoch_start", state.epoch)
        restore_rng_state(resumed_rng)

    def _after_step(self, *, epoch_done: bool, step_done: bool = True) -> bool:
        """Logging, validation, the epoch's end, checkpoints and stop checks after a step.

        Args:
            epoch_done: this step ended the epoch.
            step_done: an optimizer step was just taken (``False`` only to finish an epoch
                whose last step an older checkpoint holds).

        Returns:
            Whether the epoch loop must end now.
        """
        state, settings = self.state, self.settings
        checkpoint_due = False
        if step_done and state.step % settings.log_every == 0:
            self._log_training()
        if step_done and settings.unit == "iteration":
            if settings.valid_every is not None and state.step % settings.valid_every == 0:
                self._validate()
            every = settings.checkpoint_every
            checkpoint_due = every is not None and state.step % every == 0
        if epoch_done:
            self._end_epoch()
            if self._due_at_epoch_end(settings.valid_every) and (
                self.record.last_valid_step != state.step
            ):
                self._validate()
            checkpoint_due = checkpoint_due or self._due_at_epoch_end(settings.checkpoint_every)
        if checkpoint_due:
            self._checkpoint()
        return self._should_stop()

    def _should_stop(self) -> bool:
        """The stop vote: one collective per step, a second only on the step that stops."""
        state, context = self.state, self.context
        stop = self.signals.requested is not None
        stop_by_model = self.model.should_training_stop()
        if context.is_distributed and context.agree(stop or stop_by_model, "any"):
            stop_by_model = context.agree(stop_by_model, "any")
            stop = not stop_by_model
        elif context.is_distributed:
            stop = stop_by_model = False
        if stop_by_model:
            self.logger.info("should_training_stop() asked to end training at step %d", state.step)
            self.record.stopped_by_model = True
            return True
        if stop:
            name = self.signals.requested.name if self.signals.requested else "a stop signal"
            if self.complete():
                self.logger.warning(
                    "%s received on the last step (%d): finishing the run", name, state.step
                )
                return True
            self.logger.warning(
                "%s received: stopping after step %d and writing a checkpoint", name, state.step
            )
            self.interrupted = True
            return True
        return self.complete()

    def _end_epoch(self) -> None:
        state = self.state
        self._hook("on_training_epoch_end", state.epoch)
        if self.model.scheduler_interval == "epoch" and self.automatic:
            self.step.step_schedulers()
        state.epoch += 1
        state.batch_in_epoch = 0
        self.data.set_epoch(state.epoch)

    def _due_at_epoch_end(self, every: int | None) -> bool:
        """Whether a cadence of ``every`` units (``None``: every epoch) falls on this epoch end."""
        if every is None:
            return True
        return self.settings.unit == "epoch" and self.state.epoch % every == 0

    # ---- logging, validation, checkpoints ---------------------------------------------------

    def _log_training(self) -> None:
        if self.train_means.count == 0:
            return
        metrics: dict[str, float | torch.Tensor] = {
            f"train/{name}": value for name, value in self.train_means.means().items()
        }
        for name, optimizer in self.model.optimizers().items():
            metrics[f"lr/{name}"] = float(optimizer.param_groups[0]["lr"])
        reduced = reduce_once(self.context, metrics)
        self.view.logged = reduced
        self.view.skipped_steps = self.record.skipped_steps
        reduced.update(self.callbacks.collect_metrics(self.view, self.model))
        self.train_means.reset()
        reduced["epoch"] = _report.epoch_of_step(self.state)
        if self.context.is_main_process:
            self.metric_logger.log_scalars(reduced, self.state.step)
        self.callbacks.call("on_log", self.view, self.model)

    def _validate(self) -> None:
        """Validate every set: the hooks once, ``valid_metrics`` merged over the sets."""
        loaders = valid_loaders(self.data)
        model, state = self.model, self.state
        self.record.last_valid_step = state.step
        if not loaders:
            return
        cycle = state.validation_cycles
        model.eval()
        self._hook("on_validation_start", cycle)
        started = time.perf_counter()
        model.valid_metrics = validate_sets(
            loaders,
            model,
            context=self.context,
            autocast=self.precision.autocast,
            same_batches=self.sharded is not None,
        )
        took = time.perf_counter() - started
        state.validation_cycles += 1
        if self.context.is_main_process:
            record: dict[str, float] = {f"valid/{k}": v for k, v in model.valid_metrics.items()}
            if self.settings.track_performance:
                record["time/validation"] = took
            record["epoch"] = _report.epoch_of_step(state)
            self.metric_logger.log_scalars(record, state.step)
        self._hook("on_validation_end", cycle)
        if self.context.is_main_process:
            _report.validation(self, cycle, took)
        model.train()
        if model.monitor is not None and model.monitor in model.valid_metrics:
            for scheduler in model.schedulers().values():
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(model.valid_metrics[model.monitor])

    def _checkpoint(self) -> None:
        """Write a checkpoint of this step (collective: every rank gives its RNG state)."""
        context, state = self.context, self.state
        self.callbacks.call("on_checkpoint_start", self.view, self.model)
        if self.sharded is not None and isinstance(self.store, ShardedCheckpointStore):
            self._checkpoint_shards(self.sharded, self.store)
            return
        gathered = context.all_gather_object((capture_rng_state(), self.epoch_start_rng))
        if self.sharded is not None:
            self.sharded.gather()
        if context.is_main_process and self.store is not None:
            parts = self.parts([now for now, _ in gathered], [start for _, start in gathered])
            # Metrics only of a validation of exactly these weights: else "best" could be
            # weights that were never validated (e.g. diverged since the last validation).
            validated = self.record.last_valid_step == state.step
            info = self.store.save(
                _checkpoint.assemble(parts),
                step=state.step,
                epoch=state.epoch,
                metrics=dict(self.model.valid_metrics) if validated else {},
            )
            self.last_checkpoint = self.view.last_checkpoint = info.path
        self.last_checkpoint_step = state.step
        if context.is_main_process:
            self.metric_logger.flush()

    def _checkpoint_shards(self, sharded: ShardedModel, store: ShardedCheckpointStore) -> None:
        """Every rank writes its shards and its own RNG state through DCP (a collective)."""
        state = self.state
        parts = self.parts([], [])
        parts["model"] = _Value(sharded.local_state_dict())
        parts["rng"] = _Value(capture_rng_state())
        parts["epoch_start_rng"] = _Value(self.epoch_start_rng)
        validated = self.record.last_valid_step == state.step
        info = store.save_sharded(
            _checkpoint.assemble_sharded(parts, self.context.rank),
            step=state.step,
            epoch=state.epoch,
            metrics=dict(self.model.valid_metrics) if validated else {},
            asynchronous=self.settings.async_checkpoints,
        )
        self.last_checkpoint = self.view.last_checkpoint = info.path
        self.last_checkpoint_step = state.step
        if self.context.is_main_process:
            self.metric_logger.flush()


def batch_size(batch: Any) -> int:
    """The first dimension of the first tensor in a (nested) batch; 0 when it holds none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        for item in batch:
            size = batch_size(item)
            if size:
                return size
    return 0
