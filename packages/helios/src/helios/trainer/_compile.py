"""``compile``: the networks compiled with ``torch.compile`` for ``fit``, and given back after.

Compilation is done in place, with ``nn.Module.compile``: the network stays the same object
with the same ``state_dict()`` keys, so checkpoints never see a wrapper and a run resumes with
or without compile. Only networks with trainable parameters are compiled. With
:attr:`Model.compile_modules <helios.core.Model.compile_modules>` the blocks of those classes
are compiled one by one instead ("regional" compilation: dynamo compiles a block once and reuses
the code for the blocks like it). It happens before the networks are wrapped for data
parallelism: each block is compiled, then the network is wrapped (DDP) or sharded (FSDP2), the
order that composes with both. Only the networks' ``forward`` is compiled; the trainer's own
code around ``train_step`` (autocast, loss scaling, accumulation, metrics) stays outside the
graphs, so it can neither break them nor make them recompile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from helios.core import Model, unwrap

__all__ = ["compile_networks", "uncompile"]

_log = logging.getLogger("helios.trainer")


def _trainable(network: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in network.parameters())


def _targets(model: Model, regional: bool) -> list[nn.Module]:
    """The modules to compile: each network's blocks (regional), or the networks themselves."""
    blocks = type(model).compile_modules
    targets: list[nn.Module] = []
    for name, network in model.networks().items():
        # the user compiled (torch.compile or nn.Module.compile) or wrapped it already
        if unwrap(network) is not network or network._compiled_call_impl is not None:
            _log.info(
                "network %r is wrapped already (%s): not compiled again",
                name,
                type(network).__name__,
            )
            continue
        if not _trainable(network):
            continue
        found = [m for m in network.modules() if isinstance(m, blocks)] if regional else []
        targets.extend(found or [network])
    return targets


def compile_networks(model: Model, setting: bool | Mapping[str, Any]) -> list[nn.Module]:
    """Compile the model's trainable networks (or their blocks) in place, as ``setting`` asks.

    Args:
        model: the model, set up and on its device, not yet wrapped for data parallelism.
        setting: the trainer's ``compile``: ``False``, ``True`` or ``torch.compile``'s options
            and ``regional`` (``None`` or absent: regional when the model names blocks).

    Returns:
        The modules compiled, for :func:`uncompile`.
    """
    if setting is False:
        return []
    options = dict(setting) if isinstance(setting, Mapping) else {}
    regional = options.pop("regional", None) is not False
    targets = _targets(model, regional and bool(type(model).compile_modules))
    for module in targets:
        module.compile(**options)
    if targets:
        _log.info(
            "compiled %d module(s) (%s) with %s; the first steps compile and are slow",
            len(targets),
            ", ".join(sorted({type(module).__name__ for module in targets})),
            options or "torch.compile's defaults",
        )
    return targets


def uncompile(modules: list[nn.Module]) -> None:
    """Give the modules their eager ``forward`` back (what ``nn.Module.compile`` set aside)."""
    for module in modules:
        module._compiled_call_impl = None
