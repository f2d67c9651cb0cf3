"""Checks of a user's ``Model`` that run when training starts, before any time is spent.

Two kinds of mistakes otherwise surface late or never:

- a subclass whose ``__init__`` does not call ``super().__init__()`` trains a whole epoch and
  fails at the first checkpoint with an ``AttributeError`` about a private attribute;
- a network or optimizer held in a plain ``list``, ``tuple`` or ``dict`` attribute is not
  discovered, so it is neither moved to the device nor saved: a resumed run silently starts it
  from scratch. Parameters an optimizer updates that belong to no discovered network are the
  same mistake seen from the optimizer's side.

:func:`check_model_initialised` raises for the first; :func:`check_model_setup` warns (with
:class:`ModelWarning`) for the others, after ``setup()`` created the attributes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from helios.core._errors import ConfigurationError

__all__ = ["ModelWarning", "check_model_initialised", "check_model_setup"]

#: Set by ``Model.__init__``; its absence means ``super().__init__()`` was not called.
INITIALISED = "_helios_model_initialised"


class ModelWarning(UserWarning):
    """Something in a ``Model`` will not be moved, saved or restored as the user expects."""


def check_model_initialised(model: object) -> None:
    """Refuse a ``Model`` whose ``__init__`` did not run ``Model.__init__``.

    Raises:
        ConfigurationError: naming the class and saying to call ``super().__init__()``.
    """
    if not vars(model).get(INITIALISED, False):
        name = type(model).__qualname__
        raise ConfigurationError(
            f"model: {name}.__init__ does not call super().__init__(); add "
            f"super().__init__() as the first line of {name}.__init__ (Model.__init__ sets up "
            "the state Helios saves and restores)"
        )


def _held(value: Any, path: str) -> Iterator[tuple[str, object]]:
    """Every network or optimizer inside a plain list, tuple or dict, with where it sits."""
    if isinstance(value, Mapping):
        items: Iterator[tuple[str, Any]] = ((f"{path}[{key!r}]", v) for key, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{index}]", v) for index, v in enumerate(value))
    else:
        return
    for where, inner in items:
        if isinstance(inner, nn.Module | torch.optim.Optimizer):
            yield where, inner
        else:
            yield from _held(inner, where)


def check_model_setup(model: Any) -> list[str]:
    """Warn about what ``setup()`` created that Helios will not move, save or restore.

    - a network or optimizer held in a plain ``list``, ``tuple`` or ``dict`` attribute (use
      ``nn.ModuleList``/``nn.ModuleDict``, one attribute per optimizer, or
      ``extra_state_dict``);
    - an optimizer that updates parameters of no discovered network.

    Each problem is one :class:`ModelWarning`, naming the attribute.

    Returns:
        the warning messages, in the order they were issued (empty when all is well).
    """
    messages: list[str] = []
    cls = type(model).__qualname__
    for name, value in vars(model).items():
        for where, held in _held(value, f"{cls}.{name}"):
            kind = "network" if isinstance(held, nn.Module) else "optimizer"
            fix = (
                "nn.ModuleList / nn.ModuleDict"
                if kind == "network"
                else "one attribute per optimizer"
            )
            messages.append(
                f"{where} is a{'n' if kind == 'optimizer' else ''} {kind} "
                f"({type(held).__name__}) in a plain {type(value).__name__}: Helios does not "
                f"discover it, so it is not moved to the device nor saved in checkpoints; use "
                f"{fix}, or save it through extra_state_dict()"
            )
    known = {id(p) for p in model.parameters()}
    for name, optimizer in model.optimizers().items():
        stray = sum(
            1
            for group in optimizer.param_groups
            for parameter in group["params"]
            if id(parameter) not in known
        )
        if stray:
            messages.append(
                f"{cls}.{name} updates {stray} parameter tensor(s) that belong to no network "
                f"attribute of {cls} (discovered: {sorted(model.networks()) or 'none'}); they "
                "are not saved in checkpoints unless extra_state_dict() saves them"
            )
    for message in messages:
        warnings.warn(message, ModelWarning, stacklevel=2)
    return messages
