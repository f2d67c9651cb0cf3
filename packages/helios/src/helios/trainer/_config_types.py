"""Config values checked against constructor annotations, and converted to what they annotate.

A value fits an annotation as plain TOML data can: an ``int`` is a ``float`` (not a ``bool``), a
string is a ``Path``, seconds are a ``timedelta``, a list is a ``tuple``. A table fits a class
annotation when its class is a subclass; a table for a parameter annotated as a callable
(``Callable[..., Optimizer]``) is handed over as a factory. Unknown kinds of annotation (a
Protocol, a generic) are left to the call.
"""

from __future__ import annotations

import collections.abc
import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from helios.core import ConfigurationError
from helios.trainer._config_targets import RESERVED

__all__ = [
    "EMPTY",
    "check_table_kind",
    "convert",
    "describe",
    "fits",
    "is_table",
    "plain_default",
    "union_members",
    "wants_factory",
]

EMPTY = inspect.Parameter.empty


def union_members(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(hint) for m in union_members(arg)]
    return [hint]


def _is_callable_hint(hint: Any) -> bool:
    return hint is collections.abc.Callable or typing.get_origin(hint) is collections.abc.Callable


def wants_factory(target: Callable[..., Any], hint: Any) -> bool:
    """Whether a table for a parameter annotated ``hint`` is handed over as a factory."""
    members = union_members(hint)
    if not any(_is_callable_hint(m) for m in members):
        return False
    for member in members:  # ``nn.Module | Callable[..., nn.Module]``: the object wins
        if isinstance(member, type) and isinstance(target, type):
            try:
                if issubclass(target, member):
                    return False
            except TypeError:
                continue
    return True


def describe(hint: Any) -> str:
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and typing.get_origin(hint) is None:
        return hint.__qualname__ if hint.__module__ == "builtins" else str(hint.__name__)
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Iterable)
_NUMBERS = (float, timedelta)  # a timedelta is given in seconds


def fits(value: Any, hint: Any) -> bool:
    """Whether plain config data ``value`` fits the annotation ``hint`` (unknown kinds: yes)."""
    if hint is EMPTY or hint is Any or isinstance(hint, typing.TypeVar | str):
        return True
    members = union_members(hint)
    if len(members) > 1:
        return any(fits(value, m) for m in members)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args and not (isinstance(value, bool) and True not in args)
    if origin in _SEQUENCES:
        element = args[0] if args and (origin is not tuple or args[-1] is ...) else Any
        return isinstance(value, list) and all(fits(v, element) for v in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if _is_callable_hint(hint):
        return False  # only a table makes a callable
    return _fits_class(value, hint) if isinstance(hint, type) else True


def _fits_class(value: Any, hint: type) -> bool:
    """Whether ``value`` fits the plain class ``hint`` (an ``int`` is a ``float``, not a bool)."""
    if isinstance(value, bool) and hint is not bool:
        return hint in (object,)
    if hint in _NUMBERS:
        return isinstance(value, int | float)
    if issubclass(hint, os.PathLike):
        return isinstance(value, str)
    return isinstance(value, hint)


def is_table(value: Any) -> bool:
    return isinstance(value, Mapping) and any(key in value for key in RESERVED)


def check_table_kind(target: Callable[..., Any], hint: Any, where: str) -> None:
    """Refuse a table whose class is not what the parameter is annotated with."""
    if hint is EMPTY or not isinstance(target, type) or wants_factory(target, hint):
        return
    hinted = union_members(hint)
    classes = [m for m in hinted if isinstance(m, type) and typing.get_origin(m) is None]
    if not classes or len(classes) < len(hinted):
        return  # a hint we cannot decide on (a Protocol, a generic): the call will tell
    for member in classes:
        try:
            if issubclass(target, member):
                return
        except TypeError:
            return
    raise ConfigurationError(
        f"{where}: {target.__module__}.{target.__qualname__} does not fit the annotation "
        f"{describe(hint)}; expected a table that builds a {describe(hint)}"
    )


def plain_default(value: Any) -> tuple[bool, Any]:
    """``(True, value as TOML data)`` for a default TOML can write, else ``(False, None)``."""
    if isinstance(value, bool | int | float | str):
        return True, value
    if isinstance(value, Path):
        return True, str(value)
    if isinstance(value, timedelta):
        return True, value.total_seconds()
    if isinstance(value, list | tuple):
        items = [plain_default(v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    return False, None


def convert(value: Any, hint: Any) -> Any:
    """Config data as the annotation wants it: a ``Path``, a ``timedelta``, a ``tuple``."""
    for member in union_members(hint):
        if isinstance(value, str) and isinstance(member, type) and issubclass(member, os.PathLike):
            return Path(value)
        if member is timedelta and isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if typing.get_origin(member) is tuple and isinstance(value, list):
            return tuple(value)
    return value
