"""The registries every Helios install has, pre-filled with PyTorch's own classes.

``NETWORK_REGISTRY`` and ``MODEL_REGISTRY`` start empty: networks and models are the user's.
Losses, optimizers and learning-rate schedulers hold every class PyTorch ships, under its class
name (``"CrossEntropyLoss"``, ``"AdamW"``, ``"OneCycleLR"``), so configuration can name them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from helios.core._model import Model
from helios.core._registry import Registry

__all__ = [
    "LOSS_REGISTRY",
    "MODEL_REGISTRY",
    "NETWORK_REGISTRY",
    "OPTIMIZER_REGISTRY",
    "SCHEDULER_REGISTRY",
]

NETWORK_REGISTRY: Registry[Callable[..., nn.Module]] = Registry("networks")
LOSS_REGISTRY: Registry[Callable[..., nn.Module]] = Registry("losses")
OPTIMIZER_REGISTRY: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizers")
SCHEDULER_REGISTRY: Registry[Callable[..., Any]] = Registry("schedulers")
MODEL_REGISTRY: Registry[Callable[..., Model]] = Registry("models")
"""``Model`` subclasses by name, for ``[model] type = "..."`` of a configuration file."""


def _public_subclasses(namespace: object, base: type) -> list[type]:
    found = []
    for name, value in vars(namespace).items():
        if name.startswith("_") or not inspect.isclass(value):
            continue
        if issubclass(value, base) and value is not base:
            found.append(value)
    return found


def _fill() -> None:
    for loss in _public_subclasses(nn, nn.modules.loss._Loss):
        LOSS_REGISTRY.register(loss)
    for optimizer in _public_subclasses(torch.optim, torch.optim.Optimizer):
        OPTIMIZER_REGISTRY.register(optimizer)
    schedulers = torch.optim.lr_scheduler
    for scheduler in _public_subclasses(schedulers, schedulers.LRScheduler):
        if scheduler.__name__ != "_LRScheduler":
            SCHEDULER_REGISTRY.register(scheduler)
    if "ReduceLROnPlateau" not in SCHEDULER_REGISTRY:
        SCHEDULER_REGISTRY.register(schedulers.ReduceLROnPlateau)


_fill()
