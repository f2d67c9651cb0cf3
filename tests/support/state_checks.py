"""Exact comparison of nested state, and the trip a state makes through a checkpoint file.

The one place the tests compare states (tensors with ``torch.equal``, dtype included) and send a
state through ``torch.save`` / ``torch.load(weights_only=True)``, as a checkpoint does.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from helios.core import Stateful


def nested_difference(actual: Any, expected: Any, path: str = "state") -> str | None:
    """Where and how ``actual`` first differs from ``expected``; ``None`` when identical.

    Tensors must have the same dtype and be ``torch.equal``, NumPy arrays ``array_equal``; dicts
    the same keys, lists and tuples the same type and length; anything else must be ``==``.
    """
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            return f"{path}: expected a tensor, got {type(actual).__name__}"
        if actual.dtype != expected.dtype:
            return f"{path}: dtype {actual.dtype} != {expected.dtype}"
        if not torch.equal(actual, expected):
            return f"{path}: tensors differ"
        return None
    if isinstance(expected, np.ndarray):
        if not isinstance(actual, np.ndarray) or not np.array_equal(actual, expected):
            return f"{path}: arrays differ"
        return None
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return f"{path}: expected a dict, got {type(actual).__name__}"
        if actual.keys() != expected.keys():
            return f"{path}: keys {sorted(map(str, actual))} != {sorted(map(str, expected))}"
        for key in expected:
            found = nested_difference(actual[key], expected[key], f"{path}/{key}")
            if found is not None:
                return found
        return None
    if isinstance(expected, list | tuple):
        if type(actual) is not type(expected):
            return f"{path}: {type(actual).__name__} != {type(expected).__name__}"
        if len(actual) != len(expected):
            return f"{path}: length {len(actual)} != {len(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            found = nested_difference(a, e, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if actual != expected:
        return f"{path}: {actual!r} != {expected!r}"
    return None


def assert_nested_equal(actual: Any, expected: Any, path: str = "state") -> None:
    """Fail with the path of the first difference unless the nested values are identical."""
    difference = nested_difference(actual, expected, path)
    assert difference is None, difference


def round_trip(state: Mapping[str, Any] | Stateful, into: Stateful | None = None) -> dict[str, Any]:
    """``state`` (or a Stateful's ``state_dict()``) through ``torch.save`` and a safe load.

    With ``into``, the loaded state is also given to ``into.load_state_dict``.

    Returns:
        The state as ``torch.load(weights_only=True)`` gives it back.
    """
    if isinstance(state, Stateful):
        state = state.state_dict()
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    if into is not None:
        into.load_state_dict(loaded)
    return loaded
