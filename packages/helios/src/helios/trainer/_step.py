"""One training batch: forward, backward and, at the end of a window, the optimizer step.

With ``accumulate=N`` the gradients of N batches are summed into one optimizer step; on all but
the window's last batch DDP skips its gradient all-reduce (``no_sync``). The loss is divided by
the number of batches the window really holds (the last window of an epoch may be shorter).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from helios.core import ConfigurationError, DistributedContext, Model, TrainingState
from helios.trainer._precision import Precision

if TYPE_CHECKING:
    from helios.trainer._checkpoint import RunRecord

__all__ = ["TrainStep", "split_output", "to_device"]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # named tuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _refuse_loss(loss: torch.Tensor) -> None:
    """Say what is wrong with a loss automatic optimisation cannot backpropagate."""
    if loss.ndim != 0:
        raise ConfigurationError(
            f"train_step returned a loss of shape {tuple(loss.shape)}; expected a scalar tensor "
            "(reduce it, e.g. with .mean())"
        )
    raise ConfigurationError(
        "train_step returned a loss that does not require grad (detached, or computed under "
        "torch.no_grad()); expected the loss computed from the networks' outputs"
    )


def split_output(output: Any, *, automatic: bool) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """The loss to optimise and the metrics to log from what ``train_step`` returned."""
    if isinstance(output, torch.Tensor):
        return output, {"loss": output}
    if isinstance(output, Mapping):
        metrics = dict(output)
        loss = metrics.get("loss")
        if automatic and not isinstance(loss, torch.Tensor):
            raise ConfigurationError(
                "train_step returned a dict without a tensor under 'loss' "
                f"(keys: {sorted(metrics)}); return the loss to optimise, or set "
                "automatic_optimization = False"
            )
        return cast("torch.Tensor | None", loss), metrics
    if output is None and not automatic:
        return None, {}
    raise ConfigurationError(
        f"train_step returned {type(output).__name__}; expected a loss tensor or a dict holding "
        "'loss'" + ("" if automatic else " (or None for a model that optimises itself)")
    )


class TrainStep:
    """Trains on one batch at a time; looked-up lists keep the hot path free of scans.

    Args:
        model: the model (its networks may be DDP-wrapped already).
        state: the training state, whose counters each batch advances.
        precision: autocast, scaling and the scaled optimizer step.
        context: the process group (for ``no_sync``).
        clip_grad_norm: clip the gradient norm of all networks to this, or ``None``.
        no_sync: the context that skips a network's gradient synchronisation (default: the
            context's, DDP's ``no_sync``; FSDP's ``set_requires_gradient_sync(False)``).

    Raises:
        ConfigurationError: automatic optimisation without an optimizer.
    """

    def __init__(
        self,
        model: Model,
        state: TrainingState,
        precision: Precision,
        context: DistributedContext,
        clip_grad_norm: float | None,
        *,
        no_sync: Callable[[nn.Module], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.model, self.state, self.precision, self.context = model, state, precision, context
        self.no_sync = no_sync or context.no_sync
        self.clip_grad_norm = clip_grad_norm
        self.automatic = type(model).automatic_optimization
        self.networks = list(model.networks().values())
        self.optimizers = list(model.optimizers().values())
        if self.automatic and not self.optimizers:
            raise ConfigurationError(
                f"{type(model).__name__} has no optimizer attribute for automatic optimisation"
            )
        self.parameters = [p for net in self.networks for p in net.parameters()]
        self.schedulers = [  # ReduceLROnPlateau is stepped with the metric after validation
            scheduler
            for scheduler in model.schedulers().values()
            if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        ]
        # Loaders give CPU tensors: moving them is only needed for another device.
        self.device = context.device
        self.move_batches = self.device.type != "cpu"
        #: ``non_finite="skip"``: the record that counts skipped steps (``None``: no checks).
        self.skip_non_finite_into: RunRecord | None = None
        #: Whether the last batch's loss was not finite (skip mode): its metrics are not logged.
        self.skipped_batch = False
        self._window_poisoned = False
        #: Seconds spent in ``train_step`` (host clock), a running total: a rank's own work
        #: before it exchanges gradients, where a slow rank shows under DDP.
        self.forward_seconds = 0.0

    def train_batch(self, batch: Any, *, window: int, last_in_window: bool) -> dict[str, Any]:
        """Forward and backward of one batch, and the optimizer step if it ends the window.

        Returns:
            The metrics ``train_step`` returned.
        """
        state = self.state
        if self.move_batches:
            batch = to_device(batch, self.device)
        # The hot path: no per-step allocation of contexts that do nothing.
        self.skipped_batch = False
        if self.automatic and not last_in_window:
            with contextlib.ExitStack() as stack:
                for network in self.networks:
                    stack.enter_context(self.no_sync(network))
                metrics = self._forward_backward(batch, window)
        else:
            metrics = self._forward_backward(batch, window)
        state.batch_in_epoch += 1
        state.batches += 1
        if not self.automatic:
            state.step += 1
        elif last_in_window:
            self._optimizer_step()
        return metrics

    def _forward_backward(self, batch: Any, window: int) -> dict[str, Any]:
        """``train_step`` under autocast, then backward of the (scaled) loss of the window."""
        started = time.perf_counter()
        with self.precision.autocast():
            output = self.model.train_step(batch, self.state)
        self.forward_seconds += time.perf_counter() - started
        loss, metrics = split_output(output, automatic=self.automatic)
        if self.automatic:
            assert loss is not None
            if loss.ndim != 0 or not loss.requires_grad:
                _refuse_loss(loss)
            if self.skip_non_finite_into is not None and not bool(torch.isfinite(loss)):
                self.skipped_batch = self._window_poisoned = True
                return metrics  # no backward: the window's step is skipped
            if window > 1:
                loss = loss / window
            torch.autograd.backward(self.precision.scale(loss))
        return metrics

    def _skip_step(self, record: RunRecord) -> None:
        """Drop the window's gradients instead of stepping; count it (``non_finite="skip"``)."""
        self._window_poisoned = False
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        record.skipped_steps += 1
        logging.getLogger("helios").warning(
            "non-finite training loss at step %d: optimizer step skipped (%d so far)",
            self.state.step + 1,
            record.skipped_steps,
        )

    def _optimizer_step(self) -> None:
        optimizers = self.optimizers
        record = self.skip_non_finite_into
        if record is not None and self._window_poisoned:
            self._skip_step(record)
            if self.model.scheduler_interval == "step":
                self.step_schedulers()
            self.state.step += 1
            return
        if self.clip_grad_norm is not None:
            self.precision.unscale(optimizers)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_grad_norm)
        self.precision.step(optimizers)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.model.scheduler_interval == "step":
            self.step_schedulers()
        self.state.step += 1

    def step_schedulers(self) -> None:
        """Step the schedulers that follow steps or epochs (not ``ReduceLROnPlateau``)."""
        for scheduler in self.schedulers:
            scheduler.step()
