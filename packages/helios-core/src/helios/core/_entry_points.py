"""Registry entries from installed packages: the ``helios.registries`` entry-point group.

A package of networks makes its names available to every configuration file by declaring an
entry point in its ``pyproject.toml``::

    [project.entry-points."helios.registries"]
    my_networks = "my_networks.registry"            # a module: importing it registers
    more = "my_networks.registry:register_all"      # or a function, called with no arguments

``pip install`` of the package is enough: a registry that misses a name loads the group once
(in name order) and looks again. A plugin that fails to load is an error naming it, never
skipped quietly.
"""

from __future__ import annotations

import importlib.metadata
import types
from typing import Any

from helios.core._errors import ConfigurationError

__all__ = ["REGISTRY_ENTRY_POINTS", "load_registry_entry_points"]

REGISTRY_ENTRY_POINTS = "helios.registries"
"""The entry-point group whose entries fill Helios' registries."""

_loaded: dict[str, str] = {}


def load_registry_entry_points(*, reload: bool = False) -> dict[str, str]:
    """Load every ``helios.registries`` entry point not loaded yet.

    Args:
        reload: look at the installed distributions again (a package installed since).

    Returns:
        Every entry point loaded so far, ``{name: "module:attribute"}``.

    Raises:
        ConfigurationError: an entry point does not import, or its function raises.
    """
    if _loaded and not reload:
        return dict(_loaded)
    found = importlib.metadata.entry_points(group=REGISTRY_ENTRY_POINTS)
    for entry in sorted(found, key=lambda e: (e.name, e.value)):
        if entry.name in _loaded:
            continue
        where = f"entry point {entry.name!r} = {entry.value!r} of group {REGISTRY_ENTRY_POINTS!r}"
        try:
            loaded: Any = entry.load()
            if callable(loaded) and not isinstance(loaded, types.ModuleType):
                loaded()
        except Exception as error:  # a plugin runs its own code: any failure is reported
            raise ConfigurationError(
                f"{where} failed to load: {type(error).__name__}: {error}"
            ) from error
        _loaded[entry.name] = entry.value
    if not _loaded:
        _loaded[""] = ""  # looked, found none: do not look again on every miss
    return {name: value for name, value in _loaded.items() if name}
