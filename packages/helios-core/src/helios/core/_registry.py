"""A typed, name-keyed registry of classes or factories.

Configuration files name things (``"AdamW"``, ``"resnet18"``); a registry turns the name into
the object. A miss never fails quietly: the error lists the closest registered names, so a typo
is fixed at a glance.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from helios.core._errors import RegistryError

__all__ = ["Registry"]

T = TypeVar("T")
R = TypeVar("R")


class Registry(Generic[T]):
    """A mapping from names to objects of type ``T``, filled by decorator or by call.

    Example:
        >>> from helios.core import Registry
        >>> activations: Registry[type] = Registry("activations")
        >>> @activations.register
        ... class Swish: ...
        >>> @activations.register(name="gelu-tanh")
        ... class GeluTanh: ...
        >>> "Swish" in activations
        True

    Args:
        kind: what the registry holds, in the user's words ("networks", "losses"); used in
            error messages.
    """

    def __init__(self, kind: str) -> None:
        """Create an empty registry for things of the given kind."""
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(self, obj: T, *, name: str | None = None) -> T: ...

    @overload
    def register(self, obj: None = None, *, name: str | None = None) -> Callable[[T], T]: ...

    def register(self, obj: T | None = None, *, name: str | None = None) -> T | Callable[[T], T]:
        """Register ``obj`` under ``name`` (by default its ``__name__``).

        Works as a plain decorator (``@reg.register``), as a decorator with a name
        (``@reg.register(name="x")``) and as a call (``reg.register(obj, name="x")``).

        Raises:
            RegistryError: the name is already taken, or none was given and ``obj`` has no
                ``__name__``.
        """
        if obj is None:

            def decorator(target: T) -> T:
                return self.register(target, name=name)

            return decorator
        key = name if name is not None else getattr(obj, "__name__", None)
        if not isinstance(key, str) or not key:
            raise RegistryError(
                f"cannot register {obj!r} in the {self.kind} registry: it has no __name__; "
                "pass name='...'"
            )
        if key in self._entries:
            raise RegistryError(
                f"the {self.kind} registry already holds {key!r} "
                f"({self._entries[key]!r}); pick another name for {obj!r}"
            )
        self._entries[key] = obj
        return obj

    def get(self, name: str) -> T:
        """Return what is registered under ``name``.

        Raises:
            RegistryError: nothing is registered under ``name``, even after loading the
                ``helios.registries`` entry points; the message lists the closest names.
        """
        if name not in self._entries:
            from helios.core._entry_points import load_registry_entry_points

            load_registry_entry_points()  # an installed package may provide it
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self._miss_message(name)) from None

    def create(self: Registry[Callable[..., R]], name: str, /, **kwargs: Any) -> R:
        """Look up ``name`` and call it with ``kwargs``: ``create("AdamW", params=p, lr=1e-3)``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """All registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered."""
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        """Iterate over the registered names."""
        return iter(self._entries)

    def __len__(self) -> int:
        """How many entries the registry holds."""
        return len(self._entries)

    def __repr__(self) -> str:
        """Show the kind and the number of entries."""
        return f"Registry({self.kind!r}, {len(self)} entries)"

    def _miss_message(self, name: str) -> str:
        names = list(self._entries)
        by_case = {n.lower(): n for n in names}
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        folded = by_case.get(name.lower())
        if folded is not None and folded not in close:
            close.insert(0, folded)
        message = f"the {self.kind} registry has no entry {name!r}"
        if close:
            return message + "; closest: " + ", ".join(repr(n) for n in close)
        if not names:
            return message + " (it is empty)"
        return (
            message
            + f"; it holds {len(names)} names, e.g. "
            + ", ".join(repr(n) for n in names[:5])
        )
