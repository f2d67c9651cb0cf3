"""Callbacks: small objects the loop calls at fixed points, after the ``Model``'s own hooks.

The ``Model``'s hooks are for modelling code; a callback is for what is not the model's business
(early stopping, a progress bar, an average of the weights, a monitor), and is reusable across
models. Every hook has one signature, ``(state, model)``: ``state`` is the :class:`TrainerState`
(where the run is, what it was asked to do), ``model`` the user's :class:`~helios.core.Model`.

A callback with ``state_dict()`` and ``load_state_dict()`` is saved in every checkpoint under its
``state_key`` (by default its class name) and restored on resume, so a run stopped at any step
resumes with the callback's state exactly as it was. Two stateful callbacks with one key are
refused: give one of them another ``state_key``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helios.core import ConfigurationError, DistributedContext, Model, TrainingState
from helios.trainer._wiring import LOGGER_NAME, ProgressBar

if TYPE_CHECKING:
    from helios.trainer._metrics import RunningMeans
    from helios.trainer._settings import Settings

__all__ = ["Callback", "Callbacks", "EarlyStopping", "TrainerState", "TrainingProgressBar"]

HOOKS = (
    "on_training_start",
    "on_training_epoch_start",
    "on_training_batch_start",
    "on_training_batch_end",
    "on_log",
    "on_checkpoint_start",
    "on_validation_start",
    "on_validation_end",
    "on_training_epoch_end",
    "on_training_end",
    "on_fit_exit",
)


@dataclasses.dataclass
class TrainerState:
    """What a callback sees of the run (owned by the trainer; read it, do not change it).

    Attributes:
        training: the position of the run (epoch, step, batches, validation cycles).
        settings: the trainer's settings (``unit``, ``total``, ``run_dir``, ...).
        epoch_length: batches in the current epoch (0 before the first epoch starts).
        is_main_process: whether this process is global rank 0.
        logged: the record of the last logging point: the training metrics averaged over the
            processes, with what the callbacks' :meth:`Callback.collect_metrics` added (the same
            on every process).
        distributed: the process group, for a callback's own collectives (every process must
            call them at the same hooks); ``None`` before training starts.
        data_wait: seconds this process has waited for the training loader (inside
            ``next(loader)``, its start included) in this ``fit``, a running total.
        samples: training samples this process has taken in this ``fit`` (the first dimension of
            a batch's first tensor), a running total.
        forward_time: seconds this process has spent in ``Model.train_step`` in this ``fit``
            (host clock), a running total.
        unlogged: the running sums of the training metrics since the last logging point, on the
            device (reading one waits for the device).
        last_checkpoint: the newest checkpoint of this run (this ``fit``'s or the one it resumed
            from), on global rank 0; ``None`` before any.
        skipped_steps: optimizer steps skipped for a non-finite loss (``non_finite="skip"``), in
            the whole run.
    """

    training: TrainingState
    settings: Settings
    epoch_length: int = 0
    is_main_process: bool = True
    logged: dict[str, float] = dataclasses.field(default_factory=dict)
    distributed: DistributedContext | None = None
    data_wait: float = 0.0
    samples: int = 0
    forward_time: float = 0.0
    unlogged: RunningMeans | None = None
    last_checkpoint: Path | None = None
    skipped_steps: int = 0


class Callback:
    """Base class of callbacks: every hook does nothing; override the ones you need.

    Hooks are called in this order, each after the ``Model``'s hook of the same name (where the
    model has one), on every process::

        on_training_start
        per epoch:  on_training_epoch_start
            per batch:  on_training_batch_start, on_training_batch_end (after the optimizer
                        step when the batch ends an accumulation window)
            per logging point: collect_metrics (add to the record), on_log (state.logged
                        holds the record)
            per checkpoint: on_checkpoint_start (raise to refuse it)
            per validation: on_validation_start, on_validation_end (model.valid_metrics)
            on_training_epoch_end
        on_training_end (training reached its end; not after a stop signal)
        on_fit_exit (always, last, even after an exception: close what you opened)

    ``should_training_stop`` is asked after every step; it must answer the same on every
    process (decide from reduced metrics or the state, never from one rank's data).
    """

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint (the class name by default)."""
        return type(self).__name__

    def on_training_start(self, state: TrainerState, model: Model) -> None:
        """Before the first batch of this ``fit`` (fresh or resumed)."""

    def on_training_epoch_start(self, state: TrainerState, model: Model) -> None:
        """At an epoch's start, and again when a run resumes inside the epoch."""

    def on_training_batch_start(self, state: TrainerState, model: Model) -> None:
        """Before every training batch."""

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        """After every training batch (and its optimizer step, if it took one)."""

    def collect_metrics(self, state: TrainerState, model: Model) -> Mapping[str, float]:
        """Metrics to add to this logging point's record (every process; rank 0's are logged).

        Called after the training means were averaged (``state.logged`` holds them) and before
        the record is written. Collectives are allowed: every process calls this.
        """
        return {}

    def on_log(self, state: TrainerState, model: Model) -> None:
        """After the training metrics were logged (``state.logged``)."""

    def on_checkpoint_start(self, state: TrainerState, model: Model) -> None:
        """Before a checkpoint is written (every process); raising refuses it."""

    def on_validation_start(self, state: TrainerState, model: Model) -> None:
        """Before a validation pass."""

    def on_validation_end(self, state: TrainerState, model: Model) -> None:
        """After a validation pass; ``model.valid_metrics`` holds its results."""

    def on_training_epoch_end(self, state: TrainerState, model: Model) -> None:
        """After an epoch's last batch (before the epoch counter moves on)."""

    def on_training_end(self, state: TrainerState, model: Model) -> None:
        """Training reached its end (``total``, early stopping or a stop request)."""

    def on_fit_exit(self, state: TrainerState, model: Model) -> None:
        """Last, on every way out of ``fit`` in this process (exceptions included)."""

    def should_training_stop(self, state: TrainerState, model: Model) -> bool:
        """Return ``True`` to end training (as the end of ``total`` does)."""
        return False


def _overrides(callback: Callback, hook: str) -> bool:
    """Whether ``callback`` may do something at ``hook`` (its class or its lookup changes it)."""
    kind = type(callback)
    if kind.__getattribute__ is not object.__getattribute__:
        return True
    if hook in getattr(callback, "__dict__", {}):
        return True
    return getattr(kind, hook) is not getattr(Callback, hook)


def _is_stateful(callback: object) -> bool:
    return callable(getattr(callback, "state_dict", None)) and callable(
        getattr(callback, "load_state_dict", None)
    )


class Callbacks:
    """The callbacks of a run, called in order; their states form one checkpoint part.

    Raises:
        ConfigurationError: a callback is not a :class:`Callback`, or two stateful callbacks
            share a ``state_key``.
    """

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks: list[Callback] = list(callbacks)
        keys: dict[str, Callback] = {}
        for index, callback in enumerate(self.callbacks):
            if not isinstance(callback, Callback):
                raise ConfigurationError(
                    f"callback {index} must be a helios.trainer.Callback, got "
                    f"{type(callback).__name__}"
                )
            if not _is_stateful(callback):
                continue
            key = callback.state_key
            if key in keys:
                raise ConfigurationError(
                    f"callbacks {type(keys[key]).__name__} and {type(callback).__name__} "
                    "both save their state under {key!r}: give one of "
                    "them another state_key"
                )
            keys[key] = callback
        self.stateful = keys
        # Per hook, the callbacks that do something there: the per-batch hooks then cost
        # nothing for the built-ins that leave them alone.
        self.hooked = {
            hook: [c for c in self.callbacks if _overrides(c, hook)]
            for hook in (*HOOKS, "should_training_stop")
        }

    def call(self, hook: str, state: TrainerState, model: Model) -> None:
        """Call ``hook`` of every callback, in order."""
        for callback in self.hooked.get(hook, self.callbacks):
            getattr(callback, hook)(state, model)

    def collect_metrics(self, state: TrainerState, model: Model) -> dict[str, float]:
        """What every callback adds to this logging point's record, in order."""
        collected: dict[str, float] = {}
        for callback in self.callbacks:
            collected.update(callback.collect_metrics(state, model))
        return collected

    def should_training_stop(self, state: TrainerState, model: Model) -> bool:
        """Whether any callback asks to end training."""
        stoppers = self.hooked["should_training_stop"]
        return any(callback.should_training_stop(state, model) for callback in stoppers)

    def state_dict(self) -> dict[str, Any]:
        """Every stateful callback's state, by ``state_key``."""
        return {key: callback.state_dict() for key, callback in self.stateful.items()}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore each stateful callback; one missing from ``state`` starts fresh (logged)."""
        log = logging.getLogger(LOGGER_NAME)
        for key, callback in self.stateful.items():
            if key in state:
                callback.load_state_dict(state[key])  # type: ignore[attr-defined]
            else:
                log.warning("the checkpoint holds no state of callback %r: it starts fresh", key)
        for key in state.keys() - self.stateful.keys():
            log.warning("the checkpoint holds the state of callback %r, not used by this run", key)


class EarlyStopping(Callback):
    """Stop after ``patience`` validations in a row without improvement.

    Whether a validation improved is :meth:`Model.have_metrics_improved`'s answer (by default:
    ``Model.monitor`` moved in the direction of ``monitor_mode``). The count of validations
    without improvement is this callback's state, mirrored in ``TrainingState.early_stop_count``.
    The trainer always has one (``Trainer(early_stop_patience=...)`` sets its patience; ``None``
    counts without stopping); pass your own in ``callbacks`` to replace it.

    Args:
        patience: validations without improvement that end training; ``None`` never stops.
    """

    def __init__(self, patience: int | None) -> None:
        bad = isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        if patience is not None and bad:
            raise ConfigurationError(f"patience must be a positive int or None, got {patience!r}")
        self.patience = patience
        self.count = 0

    def on_validation_end(self, state: TrainerState, model: Model) -> None:
        """Count this validation as an improvement or not."""
        if not model.valid_metrics:
            return
        self.count = 0 if model.have_metrics_improved() else self.count + 1
        state.training.early_stop_count = self.count
        if self.should_training_stop(state, model):
            logging.getLogger(LOGGER_NAME).info(
                "early stopping at step %d: no improvement in %d validations",
                state.training.step,
                self.count,
            )

    def should_training_stop(self, state: TrainerState, model: Model) -> bool:
        """Whether ``patience`` validations in a row did not improve."""
        return self.patience is not None and self.count >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """The count of validations without improvement."""
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the count."""
        self.count = int(state["count"])


class TrainingProgressBar(Callback):
    """A progress bar on global rank 0: over the steps (``unit="iteration"``) or each epoch.

    Args:
        enabled: ``None`` shows it when the output is a terminal.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.seen = (0, 0)  # (step, batch_in_epoch) at the last update
        self.postfix: dict[str, float] = {}

    def _open(self, total: int, initial: int, desc: str) -> None:
        self.bar = ProgressBar(total, initial=initial, desc=desc, unit="step", enabled=self.enabled)
        if self.postfix:
            self.bar.set_postfix({name: f"{value:.4g}" for name, value in self.postfix.items()})

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _shown(self, state: TrainerState) -> bool:
        return state.is_main_process and self.enabled is not False

    def on_training_start(self, state: TrainerState, model: Model) -> None:
        """Open the run's bar (``unit="iteration"``)."""
        training = state.training
        self.seen = (training.step, training.batch_in_epoch)
        if self._shown(state) and state.settings.unit == "iteration":
            self._open(state.settings.total, training.step, "train")

    def on_training_epoch_start(self, state: TrainerState, model: Model) -> None:
        """Open the epoch's bar (``unit="epoch"``)."""
        training = state.training
        self.seen = (training.step, training.batch_in_epoch)
        if self._shown(state) and state.settings.unit == "epoch":
            description = f"epoch {training.epoch + 1}/{state.settings.total}"
            self._open(state.epoch_length, training.batch_in_epoch, description)

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        """Advance by one step, or by the batches of the step on an epoch's bar."""
        training = state.training
        if training.step == self.seen[0]:
            return  # inside an accumulation window
        if self.bar is not None:
            iteration = state.settings.unit == "iteration"
            self.bar.update(1 if iteration else training.batch_in_epoch - self.seen[1])
        self.seen = (training.step, training.batch_in_epoch)

    def _show(self, state: TrainerState) -> None:
        if self.bar is None:
            return
        shown = {name: f"{value:.4g}" for name, value in self.postfix.items()}
        self.bar.set_postfix(shown)

    def on_log(self, state: TrainerState, model: Model) -> None:
        """Show the last logged training loss and throughput."""
        logged = state.logged
        for name, short in (("train/loss", "loss"), ("throughput/samples_per_sec", "samples/s")):
            if name in logged:
                self.postfix[short] = logged[name]
        self._show(state)

    def on_validation_end(self, state: TrainerState, model: Model) -> None:
        """Show the latest validation metric (the monitored one, else the first)."""
        metrics = model.valid_metrics
        name = model.monitor if model.monitor in metrics else next(iter(sorted(metrics)), None)
        if name is not None:
            self.postfix[f"valid/{name}"] = metrics[name]
            self._show(state)

    def on_training_epoch_end(self, state: TrainerState, model: Model) -> None:
        """Close the epoch's bar."""
        if state.settings.unit == "epoch":
            self._close()

    def on_fit_exit(self, state: TrainerState, model: Model) -> None:
        """Close whatever bar is open."""
        self._close()


def default_callbacks(
    given: Sequence[Any],
    *,
    early_stop_patience: int | None,
    progress: bool | None,
    non_finite: str = "stop",
    track_performance: bool = True,
) -> list[Any]:
    """The user's callbacks after the built-ins the settings ask for.

    A built-in of a kind the user passed (their own ``PerformanceMonitor``, say) is not added.

    Raises:
        ConfigurationError: ``early_stop_patience`` together with an ``EarlyStopping`` callback.
    """
    given = list(given)
    for index, callback in enumerate(given):
        if not isinstance(callback, Callback):
            raise ConfigurationError(
                f"callbacks[{index}] must be a helios.trainer.Callback, got "
                f"{type(callback).__name__}"
            )
    mine = [c for c in given if isinstance(c, EarlyStopping)]
    if mine and early_stop_patience is not None:
        raise ConfigurationError(
            f"early_stop_patience={early_stop_patience} and callbacks=[EarlyStopping(...)] "
            "conflict: set the patience on your EarlyStopping, or drop it from callbacks"
        )
    built: list[Any] = [] if mine else [EarlyStopping(early_stop_patience)]
    # Imported here: those modules build on this one's Callback.
    from helios.trainer._non_finite import NonFiniteLossGuard
    from helios.trainer._performance import PerformanceMonitor

    if not any(isinstance(c, NonFiniteLossGuard) for c in given):
        built.append(NonFiniteLossGuard(non_finite))
    if track_performance and not any(isinstance(c, PerformanceMonitor) for c in given):
        built.append(PerformanceMonitor())
    if progress is not False and not any(isinstance(c, TrainingProgressBar) for c in given):
        built.append(TrainingProgressBar(progress))
    return built + given
