"""Checking that a state will load back, and copying it for an asynchronous save.

A checkpoint is only worth writing if ``torch.load(weights_only=True)`` can read it: a stray
object in a state dict would be saved without complaint and refused at resume, when it is too
late. So :func:`prepare` walks the state before anything is written and names the first value
that would not load. For an asynchronous save it also copies every tensor to the CPU, so
training may go on changing its own tensors while the copy is written in the background.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from helios.core import CheckpointError

__all__ = ["prepare"]

_LEAVES: tuple[type, ...] = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    torch.dtype,
    torch.device,
    torch.Size,
)
_MAPPINGS: tuple[type, ...] = (dict, OrderedDict, Counter)
_SEQUENCES: tuple[type, ...] = (list, tuple, set)


def _user_allowed_types() -> tuple[type, ...]:
    """Classes the user allowed with ``torch.serialization.add_safe_globals``."""
    allowed: list[type] = []
    for entry in torch.serialization.get_safe_globals():
        candidate = entry[0] if isinstance(entry, tuple) else entry
        if isinstance(candidate, type):
            allowed.append(candidate)
    return tuple(allowed)


def prepare(
    state: Mapping[str, Any],
    *,
    copy_to_cpu: bool,
    staging: list[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Check that ``state`` loads with ``weights_only=True``; copy tensors to CPU if asked.

    Args:
        state: the state to save.
        copy_to_cpu: whether to return a copy whose tensors are CPU tensors of their own (the
            same tensor appearing twice is copied once, so sharing survives).
        staging: CPU buffers of the previous copy, reused where a tensor has the same shape and
            dtype (copying into memory already mapped is several times faster than into fresh
            memory); replaced in place by the buffers of this copy. Only pass buffers that no
            one reads any more.

    Returns:
        ``state`` as a plain dict (a deep copy of its containers when ``copy_to_cpu``).

    Raises:
        CheckpointError: a key or value is of a type ``torch.load(weights_only=True)`` refuses;
            the message names where it is.
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"save: state must be a mapping of names to state dicts, got {type(state).__name__}"
        )
    user_types = _user_allowed_types()
    copies: dict[int, torch.Tensor] = {}
    previous = list(staging) if staging is not None else []
    used: list[torch.Tensor] = []

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        index = len(used)
        source = tensor.detach()
        if index < len(previous):
            buffer = previous[index]
            if (
                source.layout == torch.strided
                and source.is_contiguous()
                and buffer.shape == source.shape
                and buffer.dtype == source.dtype
            ):
                used.append(buffer.copy_(source))
                return buffer
        used.append(source.to("cpu", copy=True))
        return used[-1]

    def visit(value: Any, where: str) -> Any:
        kind = type(value)
        if isinstance(value, torch.Tensor) and (
            kind in (torch.Tensor, torch.nn.Parameter) or kind in user_types
        ):
            if not copy_to_cpu:
                return value
            if id(value) not in copies:
                copies[id(value)] = copy(value)
            return copies[id(value)]
        if kind in _LEAVES or kind in user_types:
            return value
        if kind in _MAPPINGS:
            out = kind()
            for key, item in value.items():
                if type(key) not in _LEAVES:
                    raise CheckpointError(
                        f"save: state{where} has a key of type {type(key).__name__} "
                        f"({key!r}); keys must be str, int or other plain values"
                    )
                out[key] = visit(item, f"{where}[{key!r}]")
            return out if copy_to_cpu else value
        if kind in _SEQUENCES:
            items = [visit(item, f"{where}[{i}]") for i, item in enumerate(value)]
            return kind(items) if copy_to_cpu else value
        raise CheckpointError(
            f"save: state{where} is a {kind.__module__}.{kind.__qualname__}, which "
            "torch.load(weights_only=True) refuses to load; a checkpoint holds tensors, "
            "numbers, strings, lists, tuples and dicts only (call .state_dict() on objects, "
            "or allow the class with torch.serialization.add_safe_globals)"
        )

    if isinstance(state, dict) and not copy_to_cpu:
        visit(state, "")
        return state
    result = dict(visit(dict(state), ""))
    if staging is not None:
        staging[:] = used
    return result
