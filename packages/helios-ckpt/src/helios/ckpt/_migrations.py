"""Migrations: how a checkpoint written in an older format becomes one of today's.

When the layout of the saved state changes (a key renamed, a field added), the format version
goes up and a migration is registered for the version it leaves behind. Loading an older file
runs the chain ``v -> v+1 -> ... -> FORMAT_VERSION`` on the loaded state, so old runs resume
without the user converting anything, and a missing link is a clear error rather than a
``KeyError`` deep in ``load_state_dict``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from helios.ckpt import _format
from helios.core import CheckpointError, ConfigurationError

__all__ = ["Migration", "check_migratable", "migrate", "register_migration"]

Migration = Callable[[dict[str, Any]], dict[str, Any]]

_MIGRATIONS: dict[int, Migration] = {}
_LOCK = threading.Lock()


def register_migration(from_version: int, fn: Migration) -> None:
    """Register how to upgrade a loaded state from format ``from_version`` to the next one.

    Args:
        from_version: the format version ``fn`` reads (it returns format ``from_version + 1``).
        fn: takes the state dict as loaded from the old file and returns the upgraded one.

    Raises:
        ConfigurationError: ``from_version`` is not a positive int, ``fn`` is not callable, or a
            migration from that version is already registered.
    """
    if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
        raise ConfigurationError(
            f"register_migration: from_version must be an int >= 1, got {from_version!r}"
        )
    if not callable(fn):
        raise ConfigurationError(f"register_migration: fn must be callable, got {fn!r}")
    with _LOCK:
        if from_version in _MIGRATIONS:
            raise ConfigurationError(
                f"register_migration: a migration from format {from_version} is already "
                f"registered ({_MIGRATIONS[from_version]!r})"
            )
        _MIGRATIONS[from_version] = fn


def check_migratable(version: int, path: object) -> None:
    """Raise unless a file of format ``version`` can be brought to the current format.

    Raises:
        CheckpointError: the file is newer than this helios-ckpt, or a migration is missing.
    """
    current = _format.FORMAT_VERSION
    if version > current:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}, newer than the {current} this "
            "helios-ckpt reads: upgrade helios-ckpt to load it"
        )
    missing = [v for v in range(version, current) if v not in _MIGRATIONS]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} has format version {version} and no migration is registered "
            f"from format {missing[0]} (see helios.ckpt.register_migration)"
        )


def migrate(state: dict[str, Any], version: int, path: object) -> dict[str, Any]:
    """Run the registered migrations on ``state`` from format ``version`` to the current one.

    Raises:
        CheckpointError: :func:`check_migratable` fails, or a migration raises or returns
            something other than a dict.
    """
    check_migratable(version, path)
    for step in range(version, _format.FORMAT_VERSION):
        fn = _MIGRATIONS[step]
        try:
            state = fn(state)
        except Exception as exc:
            raise CheckpointError(
                f"migrating checkpoint {path} from format {step} to {step + 1} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(state, dict):
            raise CheckpointError(
                f"the migration from format {step} returned a {type(state).__name__} for "
                f"checkpoint {path}, expected a dict"
            )
    return state
