"""The non-finite-loss guard: a NaN or infinite training loss stops, skips or is ignored.

No step waits for the device to find out. In ``"stop"`` mode the loss is checked where the host
reads it anyway: the mean of the logging window (a NaN in any step of the window makes the mean
NaN) at every logging point, and the unlogged running sum before every checkpoint, so no
checkpoint ever holds weights trained on a non-finite loss. The run fails with
:class:`NonFiniteLossError` and resumes, if asked, from the last good checkpoint.

``"skip"`` needs the answer before the optimizer step, so it reads the loss of every batch (one
device sync per batch, the price a ``GradScaler`` pays as well); the step loop skips the
optimizer step of a window holding such a loss and counts it (see ``_step``). A ``GradScaler``
that skips a step for overflowing gradients is not a non-finite loss: the guard looks at the
loss, never at the gradients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from helios.core import ConfigurationError, HeliosError, Model
from helios.trainer._callbacks import Callback, TrainerState
from helios.trainer._settings import NON_FINITE

__all__ = ["NonFiniteLossError", "NonFiniteLossGuard"]


class NonFiniteLossError(HeliosError):
    """The training loss became NaN or infinite (``non_finite="stop"``); no checkpoint of it."""


class NonFiniteLossGuard(Callback):
    """Stop on (or count the skipped steps of) a non-finite training loss.

    Built in (``Trainer(non_finite=...)`` sets its mode); pass your own in ``callbacks`` to
    watch another metric than ``loss``.

    Args:
        mode: ``"stop"``, ``"skip"`` or ``"ignore"`` (see ``Trainer``'s ``non_finite``).
        metric: the training metric to watch, as ``train_step`` names it.

    Raises:
        ConfigurationError: an unknown mode, or an empty metric name.
    """

    def __init__(self, mode: str = "stop", metric: str = "loss") -> None:
        if mode not in NON_FINITE:
            raise ConfigurationError(f"non_finite must be one of {NON_FINITE}, got {mode!r}")
        if not isinstance(metric, str) or not metric:
            raise ConfigurationError(f"metric must be a non-empty str, got {metric!r}")
        self.mode = mode
        self.metric = metric

    def _fail(self, state: TrainerState, value: float, where: str) -> None:
        training = state.training
        last = state.last_checkpoint
        good = (
            f"the last good checkpoint is {last}"
            if last is not None
            else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
            f"the training {self.metric} is {value} {where} (epoch index {training.epoch}): "
            f"training stopped without writing a checkpoint of this state; {good}. Lower the "
            "learning rate, clip gradients (clip_grad_norm=...), look for bad samples, or pass "
            'non_finite="skip" to skip the optimizer steps of such batches'
        )

    def collect_metrics(self, state: TrainerState, model: Model) -> Mapping[str, float]:
        """``train/skipped_steps`` in ``"skip"`` mode."""
        if self.mode == "skip":
            return {"train/skipped_steps": state.skipped_steps}
        return {}

    def on_log(self, state: TrainerState, model: Model) -> None:
        """Stop if the window's mean loss is not finite (the same answer on every process)."""
        value = state.logged.get(f"train/{self.metric}")
        if self.mode == "stop" and value is not None and not math.isfinite(value):
            every = state.settings.log_every
            step = state.training.step
            first = max(step - (step - 1) % every, 1)
            self._fail(
                state,
                value,
                f"in the logging window of steps {first}-{step} (train/{self.metric}, the mean "
                "over the processes)",
            )

    def on_checkpoint_start(self, state: TrainerState, model: Model) -> None:
        """Refuse a checkpoint after a non-finite loss not logged yet (agreed by every process)."""
        if self.mode != "stop" or state.unlogged is None:
            return
        total: Any = state.unlogged.sums.get(self.metric)
        bad = total is not None and not bool(torch.isfinite(total).all())
        context = state.distributed
        if context is not None and context.is_distributed:
            bad = context.agree(bad, "any")
        if bad:
            value = float(total.item()) if total is not None else float("nan")
            self._fail(
                state,
                value,
                f"before the checkpoint of step {state.training.step} (the running sum of "
                f"{self.metric} since the last logging point)",
            )
