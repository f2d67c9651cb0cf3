"""What a config table names and what it takes: ``type`` by registry, ``class`` by import.

``[model]`` looks ``type`` up in ``MODEL_REGISTRY``, ``[data]`` in ``DATAMODULE_REGISTRY``, any
other table in every registry of ``helios.core`` and ``helios.data``; ``class = "module:Name"``
imports, ``class = "path/file.py:Name"`` loads the file. The constructor's signature says which
keys a table takes -- also for ``--set`` overrides (:func:`apply_overrides`), which may name a
default the file does not write.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from helios.core import ConfigurationError, Registry, load_registry_entry_points
from helios.trainer._cli_checkpoints import CommandError
from helios.trainer._config_text import parse_value

__all__ = [
    "FROM_CODE_ONLY",
    "RESERVED",
    "SECTIONS",
    "Signature",
    "accepted_keys",
    "apply_overrides",
    "closest",
    "located",
    "signature_of",
    "spec_of",
    "table_target",
    "target_of",
]

SECTIONS = ("model", "data", "trainer")
RESERVED = ("type", "class")
FROM_CODE_ONLY = ("config", "allow_change", "config_dir")
"""Trainer arguments a config does not set: ``from_config`` passes them."""


def closest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return " (did you mean " + " or ".join(repr(n) for n in close) + "?)" if close else ""


def apply_overrides(
    config: Mapping[str, Any], overrides: Sequence[str], base_dir: Path | None = None
) -> dict[str, Any]:
    """A copy of ``config`` with each ``"key.path=value"`` of ``overrides`` set.

    The value is read as TOML (``lr=1e-3``, ``devices=[0, 1]``, ``progress=false``), else taken
    as a string (``run_dir=runs/b``). A key may be one the table holds or one its constructor
    takes (a default not written in the file).

    Raises:
        ConfigurationError: an override is not ``key=value``, or names a key that does not exist.
    """
    result: dict[str, Any] = json.loads(json.dumps(config))  # a deep copy of plain data
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigurationError(
                f"--set {override!r} is not of the form key.path=value "
                "(e.g. model.optimizer.lr=1e-3)"
            )
        table: Any = result
        for depth, part in enumerate(parts[:-1]):
            inner = table.get(part) if isinstance(table, dict) else None
            if not isinstance(inner, dict):
                where = ".".join(parts[:depth]) or "the config"
                names = [k for k, v in table.items() if isinstance(v, dict)]
                raise ConfigurationError(
                    f"--set {key}: {where} has no table {part!r}{closest(part, names)}"
                )
            table = inner
        name = parts[-1]
        if len(parts) == 1:
            raise ConfigurationError(
                f"--set {key}: the config's top level holds only the tables {list(SECTIONS)}; "
                "name a key inside one, e.g. trainer.total=20"
            )
        if name not in table:
            accepted, open_ended = accepted_keys(table, ".".join(parts[:-1]), base_dir)
            if name not in accepted and not open_ended:
                raise ConfigurationError(
                    f"--set {key}: there is no key {name!r} in {'.'.join(parts[:-1])}"
                    f"{closest(name, accepted)}; it takes {', '.join(accepted) or 'no arguments'}"
                )
        table[name] = parse_value(text.strip())
    return result


# ---- what a table names ---------------------------------------------------------------------


def _registries(section: str) -> list[Registry[Any]]:
    from helios.core import (
        LOSS_REGISTRY,
        MODEL_REGISTRY,
        NETWORK_REGISTRY,
        OPTIMIZER_REGISTRY,
        SCHEDULER_REGISTRY,
    )
    from helios.data import (
        COLLATE_REGISTRY,
        DATAMODULE_REGISTRY,
        DATASET_REGISTRY,
        SAMPLER_REGISTRY,
    )

    if section == "model":
        return [MODEL_REGISTRY]
    if section == "data":
        return [DATAMODULE_REGISTRY]
    return [
        NETWORK_REGISTRY,
        LOSS_REGISTRY,
        OPTIMIZER_REGISTRY,
        SCHEDULER_REGISTRY,
        DATASET_REGISTRY,
        COLLATE_REGISTRY,
        SAMPLER_REGISTRY,
        MODEL_REGISTRY,
        DATAMODULE_REGISTRY,
    ]


def _by_name(name: object, where: str) -> Callable[..., Any]:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{where}.type must be a registered name (a string), got {name!r}")
    load_registry_entry_points()
    registries = _registries(where)
    holders = [r for r in registries if name in r]
    if len(holders) > 1:
        raise ConfigurationError(
            f"{where}.type {name!r} is in several registries ("
            + ", ".join(r.kind for r in holders)
            + "); name the class instead: class = 'module:Name'"
        )
    if holders:
        return holders[0].get(name)  # type: ignore[no-any-return]
    names = {n: r.kind for r in registries for n in r}
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    folded = {n.lower(): n for n in names}.get(name.lower())
    if folded is not None and folded not in close:
        close.insert(0, folded)
    searched = ", ".join(r.kind for r in registries)
    hint = (
        "; closest: " + ", ".join(f"{n!r} ({names[n]})" for n in close)
        if close
        else "; register it with @REGISTRY.register, or use class = 'module:Name'"
    )
    raise ConfigurationError(
        f"{where}.type {name!r} is not registered (searched: {searched}){hint}"
    )


def spec_of(spec: object, where: str) -> str:
    """``spec`` checked and kept as written: a relative file stays relative to the config's folder.

    The resolved config -- printed, saved in the run folder, hashed -- holds the path as the
    config gives it, so a project moved with its config (a new absolute path) is the same run.
    """
    if not isinstance(spec, str) or (":" not in spec and "." not in spec):
        raise ConfigurationError(
            f"{where}.class must be 'package.module:Name' or 'path/file.py:Name', got {spec!r}"
        )
    return spec


def located(spec: str, base_dir: Path | None) -> str:
    """``spec`` with a relative file made absolute (from ``base_dir``, else the current folder)."""
    location, sep, name = spec.rpartition(":")
    if sep and (location.endswith(".py") or "/" in location or os.sep in location):
        path = Path(location).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return f"{path.resolve()}:{name}"
    return spec


def table_target(table: Mapping[str, Any], where: str, base_dir: Path | None) -> Callable[..., Any]:
    if where == "trainer":
        from helios.trainer._trainer import Trainer

        for key in RESERVED:
            if key in table:
                raise ConfigurationError(
                    f"trainer.{key}: the [trainer] table holds the Trainer's arguments; it "
                    f"takes no {key!r}"
                )
        return Trainer
    if "type" in table and "class" in table:
        raise ConfigurationError(f"{where} has both 'type' and 'class'; keep one")
    if "type" in table:
        return _by_name(table["type"], where)
    if "class" in table:
        from helios.trainer._objects import load_object

        try:
            return load_object(located(spec_of(table["class"], where), base_dir), f"{where}.class")
        except CommandError as error:
            raise ConfigurationError(str(error)) from None
    raise ConfigurationError(
        f"{where} names nothing to build: give it type = 'registered name' or class = 'module:Name'"
    )


def target_of(
    table: Mapping[str, Any], where: str, base_dir: Path | None = None
) -> Callable[..., Any]:
    """What a resolved table names (a relative ``class`` file is found from ``base_dir``)."""
    return table_target(table, where, base_dir)


class Signature(NamedTuple):
    parameters: dict[str, inspect.Parameter]
    hints: dict[str, Any]
    open_ended: bool  # takes **kwargs


def signature_of(target: Callable[..., Any]) -> Signature:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: cannot check
        return Signature({}, {}, True)
    parameters = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    function = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # annotations that do not evaluate here: checked by the call alone
        hints = {}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    return Signature(parameters, hints, open_ended)


def accepted_keys(
    table: Mapping[str, Any], where: str, base_dir: Path | None
) -> tuple[list[str], bool]:
    """The keys the table's constructor takes, and whether it takes any (``**kwargs``)."""
    if where != "trainer" and not any(key in table for key in RESERVED):
        return list(table), False  # a plain table: its own keys
    signature = signature_of(table_target(table, where, base_dir))
    names = [n for n in signature.parameters if n not in FROM_CODE_ONLY or where != "trainer"]
    return names, signature.open_ended
