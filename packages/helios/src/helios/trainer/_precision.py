"""``Precision``: the numeric format of training steps, as one small object.

Autocast for the forward pass, scaling of the loss before backward, unscaling before clipping,
and the optimizer step through the ``GradScaler`` when there is one. The scaler is the model's
own when it has one (saved with the model), else one the trainer owns for ``"16-mixed"``, whose
state is this object's ``state_dict``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal

import torch

from helios.core import ConfigurationError, Model

__all__ = ["Precision"]

_NO_CONTEXT = contextlib.nullcontext()


class Precision:
    """Autocast, loss scaling and the scaled optimizer step of one run.

    Args:
        precision: ``"32"``, ``"bf16"`` or ``"16-mixed"``.
        device: where the forward passes run.
        model: the model, whose own ``GradScaler`` (at most one) is used when it has one.
        automatic: whether the trainer optimises (else there is nothing to scale).

    Raises:
        ConfigurationError: the model has several ``GradScaler`` attributes.
    """

    def __init__(
        self,
        precision: Literal["32", "bf16", "16-mixed"],
        device: torch.device,
        model: Model,
        *,
        automatic: bool,
    ) -> None:
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        self.scaler: torch.amp.GradScaler | None = None
        self.own_scaler: torch.amp.GradScaler | None = None
        if not automatic:
            return
        scalers = model.scalers()
        if len(scalers) > 1:
            raise ConfigurationError(
                f"automatic optimisation uses one GradScaler, but {type(model).__name__} "
                f"has {sorted(scalers)}"
            )
        if scalers:
            self.scaler = next(iter(scalers.values()))
        else:
            self.own_scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
            self.scaler = self.own_scaler

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context of forward passes (a shared no-op one for ``"32"``)."""
        if self.dtype is None:
            return _NO_CONTEXT
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate: scaled when a scaler is enabled."""
        if self.scaler is not None and self.scaler.is_enabled():
            return self.scaler.scale(loss)
        return loss

    def unscale(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Unscale the gradients in place (before clipping)."""
        assert self.scaler is not None
        for optimizer in optimizers:
            self.scaler.unscale_(optimizer)

    def step(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Step every optimizer (through the scaler when enabled, which then updates)."""
        scaler = self.scaler
        assert scaler is not None
        if scaler.is_enabled():
            for optimizer in optimizers:
                scaler.step(optimizer)
            scaler.update()
        else:
            for optimizer in optimizers:
                optimizer.step()

    def state_dict(self) -> dict[str, Any] | None:
        """The trainer-owned scaler's state; ``None`` when the model owns it (or there is none)."""
        return self.own_scaler.state_dict() if self.own_scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`'s output (``None`` restores nothing)."""
        if state is not None and self.own_scaler is not None:
            self.own_scaler.load_state_dict(state)
