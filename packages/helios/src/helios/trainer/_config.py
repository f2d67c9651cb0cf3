"""Runs from a configuration: a TOML file (or a mapping) that names the model, data and trainer.

    [model]
    class = "digits.py:Classifier"     # or type = "Classifier", a name of MODEL_REGISTRY
    [model.optimizer]                  # a table: built from a registry (type) or a class
    type = "AdamW"
    lr = 3e-3
    [data]
    type = "Digits"                    # DATAMODULE_REGISTRY
    [trainer]                          # the Trainer's own arguments
    run_dir = "runs/digits"
    total = 12

A table with ``type = "name"`` is made by the registry entry of that name (``[model]`` looks in
``MODEL_REGISTRY``, ``[data]`` in ``DATAMODULE_REGISTRY``, any other table in every registry of
``helios.core`` and ``helios.data``), one with ``class = "module:Name"`` or
``"path/file.py:Name"`` by that class or function (a relative file is found from the config
file's folder); the table's other keys are its keyword arguments, recursively. A table whose
parameter is annotated as a callable (``Callable[..., Optimizer]``) is handed over as a
*factory* (``functools.partial``) for the object to call when it needs one -- an optimizer
needs the network's parameters, which exist only in ``Model.setup``; any other table is made
at once.

Everything is checked before anything is made (:func:`resolve`): an unknown ``type`` names the
closest registered names, an argument the constructor does not take names those it does, a
value of the wrong type (against the constructor's annotations) names the key, the value and
what was expected. The *resolved* config -- every default that TOML can write filled in, file
paths made absolute -- is what is printed, saved in the run folder and hashed into checkpoints.
"""

from __future__ import annotations

import collections.abc
import contextlib
import difflib
import functools
import hashlib
import inspect
import json
import math
import os
import tomllib
import types
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from helios.core import (
    ConfigurationError,
    Model,
    Registry,
    capture_rng_state,
    load_registry_entry_points,
    restore_rng_state,
    seed_everything,
)
from helios.trainer._cli_checkpoints import CommandError

if typing.TYPE_CHECKING:
    from helios.data import DataModule
    from helios.trainer._trainer import Trainer

__all__ = [
    "ConfigFactory",
    "ConfiguredRun",
    "apply_overrides",
    "config_diff",
    "config_key",
    "config_sha256",
    "from_config",
    "read_config",
    "resolve",
    "target_of",
    "to_toml",
    "without_run_dir",
]

SECTIONS = ("model", "data", "trainer")
RESERVED = ("type", "class")
FROM_CODE_ONLY = ("config", "allow_change")
"""Trainer arguments a config does not set: ``from_config`` passes them."""
_EMPTY = inspect.Parameter.empty


_MADE_FROM: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def config_key(made: object) -> str | None:
    """The dotted key of the table whose :class:`ConfigFactory` made ``made`` (in this process)."""
    try:
        return _MADE_FROM.get(made)
    except TypeError:  # not weakly referable: never recorded
        return None


class ConfigFactory(functools.partial[Any]):
    """A table handed over as a factory: ``functools.partial`` that remembers what it made.

    The objects it returns are recorded with its table's key (:func:`config_key`), so a change
    of that table accepted on resume reaches the object restored from the checkpoint. Nothing is
    set on the objects themselves (a scheduler's ``state_dict`` holds all its attributes).
    """

    key: str = ""

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        """Make the object and record which table made it."""
        made = super().__call__(*args, **kwargs)
        with contextlib.suppress(TypeError):  # not weakly referable
            _MADE_FROM[made] = self.key
        return made


def _factory(target: Callable[..., Any], key: str, arguments: Mapping[str, Any]) -> ConfigFactory:
    factory = ConfigFactory(target, **arguments)
    factory.key = key
    return factory


class ConfiguredRun(NamedTuple):
    """The three objects a config describes: ``model, data, trainer = from_config(...)``."""

    model: Model
    data: DataModule
    trainer: Trainer


# ---- reading, overriding, writing -----------------------------------------------------------


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML file ``path`` as a dict.

    Raises:
        ConfigurationError: the file is missing or not valid TOML (with its line and column).
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {str(file)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"config file {str(file)!r} is not valid TOML: {error}") from None


def _parse_value(text: str) -> Any:
    """A TOML value (``3e-4``, ``true``, ``[1, 2]``, ``"x"``); anything else is a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


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
                    f"--set {key}: {where} has no table {part!r}{_closest(part, names)}"
                )
            table = inner
        name = parts[-1]
        if len(parts) == 1:
            raise ConfigurationError(
                f"--set {key}: the config's top level holds only the tables {list(SECTIONS)}; "
                "name a key inside one, e.g. trainer.total=20"
            )
        if name not in table:
            accepted, open_ended = _accepted(table, ".".join(parts[:-1]), base_dir)
            if name not in accepted and not open_ended:
                raise ConfigurationError(
                    f"--set {key}: there is no key {name!r} in {'.'.join(parts[:-1])}"
                    f"{_closest(name, accepted)}; it takes {', '.join(accepted) or 'no arguments'}"
                )
        table[name] = _parse_value(text.strip())
    return result


def _closest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return " (did you mean " + " or ".join(repr(n) for n in close) + "?)" if close else ""


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise ConfigurationError(f"{value!r} ({type(value).__name__}) cannot be written as TOML")


def to_toml(config: Mapping[str, Any]) -> str:
    """``config`` (plain data: tables, lists, strings, numbers, booleans) as TOML text."""
    lines: list[str] = []

    def table(values: Mapping[str, Any], prefix: str) -> None:
        plain = [(k, v) for k, v in values.items() if not isinstance(v, Mapping)]
        inner = [(k, v) for k, v in values.items() if isinstance(v, Mapping)]
        if prefix and (plain or not inner):
            lines.append(f"[{prefix}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in plain)
        if plain:
            lines.append("")
        for key, value in inner:
            table(value, f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key))

    table(config, "")
    return "\n".join(lines).rstrip() + "\n"


def without_run_dir(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without ``trainer.run_dir``: a moved run folder is the same run."""
    compared = dict(config)
    trainer = compared.get("trainer")
    if isinstance(trainer, Mapping):
        compared["trainer"] = {k: v for k, v in trainer.items() if k != "run_dir"}
    return compared


def config_sha256(config: Mapping[str, Any]) -> str:
    """The SHA-256 of a resolved config (``trainer.run_dir`` left out), as hex."""
    text = json.dumps(without_run_dir(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


ABSENT = "(absent)"


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs: ``{key: (old, new)}`` (:data:`ABSENT` if none)."""
    before, after = _flatten(without_run_dir(old)), _flatten(without_run_dir(new))
    return {
        key: (before.get(key, ABSENT), after.get(key, ABSENT))
        for key in sorted(before.keys() | after.keys())
        if before.get(key, ABSENT) != after.get(key, ABSENT)
    }


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


def _spec(spec: object, where: str, base_dir: Path | None) -> str:
    """``spec`` with a relative file made absolute (from ``base_dir``, else the current folder)."""
    if not isinstance(spec, str) or (":" not in spec and "." not in spec):
        raise ConfigurationError(
            f"{where}.class must be 'package.module:Name' or 'path/file.py:Name', got {spec!r}"
        )
    location, sep, name = spec.rpartition(":")
    if sep and (location.endswith(".py") or "/" in location or os.sep in location):
        path = Path(location).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return f"{path.resolve()}:{name}"
    return spec


def _target(table: Mapping[str, Any], where: str, base_dir: Path | None) -> Callable[..., Any]:
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
            return load_object(_spec(table["class"], where, base_dir), f"{where}.class")
        except CommandError as error:
            raise ConfigurationError(str(error)) from None
    raise ConfigurationError(
        f"{where} names nothing to build: give it type = 'registered name' or class = 'module:Name'"
    )


def target_of(table: Mapping[str, Any], where: str) -> Callable[..., Any]:
    """What a resolved table (``type`` or an absolute ``class``) names."""
    return _target(table, where, None)


class _Signature(NamedTuple):
    parameters: dict[str, inspect.Parameter]
    hints: dict[str, Any]
    open_ended: bool  # takes **kwargs


def _signature(target: Callable[..., Any]) -> _Signature:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: cannot check
        return _Signature({}, {}, True)
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
    return _Signature(parameters, hints, open_ended)


def _accepted(
    table: Mapping[str, Any], where: str, base_dir: Path | None
) -> tuple[list[str], bool]:
    """The keys the table's constructor takes, and whether it takes any (``**kwargs``)."""
    if where != "trainer" and not any(key in table for key in RESERVED):
        return list(table), False  # a plain table: its own keys
    signature = _signature(_target(table, where, base_dir))
    names = [n for n in signature.parameters if n not in FROM_CODE_ONLY or where != "trainer"]
    return names, signature.open_ended


# ---- checking values against annotations ----------------------------------------------------


def _members(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(hint) for m in _members(arg)]
    return [hint]


def _is_callable_hint(hint: Any) -> bool:
    return hint is collections.abc.Callable or typing.get_origin(hint) is collections.abc.Callable


def _wants_factory(target: Callable[..., Any], hint: Any) -> bool:
    """Whether a table for a parameter annotated ``hint`` is handed over as a factory."""
    members = _members(hint)
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


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and typing.get_origin(hint) is None:
        return hint.__qualname__ if hint.__module__ == "builtins" else str(hint.__name__)
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Iterable)
_NUMBERS = (float, timedelta)  # a timedelta is given in seconds


def _fits(value: Any, hint: Any) -> bool:
    """Whether plain config data ``value`` fits the annotation ``hint`` (unknown kinds: yes)."""
    if hint is _EMPTY or hint is Any or isinstance(hint, typing.TypeVar | str):
        return True
    members = _members(hint)
    if len(members) > 1:
        return any(_fits(value, m) for m in members)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args and not (isinstance(value, bool) and True not in args)
    if origin in _SEQUENCES:
        element = args[0] if args and (origin is not tuple or args[-1] is ...) else Any
        return isinstance(value, list) and all(_fits(v, element) for v in value)
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


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) and any(key in value for key in RESERVED)


def _check_table_kind(target: Callable[..., Any], hint: Any, where: str) -> None:
    """Refuse a table whose class is not what the parameter is annotated with."""
    if hint is _EMPTY or not isinstance(target, type) or _wants_factory(target, hint):
        return
    classes = [m for m in _members(hint) if isinstance(m, type) and typing.get_origin(m) is None]
    if not classes or len(classes) < len(_members(hint)):
        return  # a hint we cannot decide on (a Protocol, a generic): the call will tell
    for member in classes:
        try:
            if issubclass(target, member):
                return
        except TypeError:
            return
    raise ConfigurationError(
        f"{where}: {target.__module__}.{target.__qualname__} does not fit the annotation "
        f"{_describe(hint)}; expected a table that builds a {_describe(hint)}"
    )


# ---- resolving and building -----------------------------------------------------------------


def _plain_default(value: Any) -> tuple[bool, Any]:
    """``(True, value as TOML data)`` for a default TOML can write, else ``(False, None)``."""
    if isinstance(value, bool | int | float | str):
        return True, value
    if isinstance(value, Path):
        return True, str(value)
    if isinstance(value, timedelta):
        return True, value.total_seconds()
    if isinstance(value, list | tuple):
        items = [_plain_default(v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    return False, None


def _resolve_value(value: Any, hint: Any, where: str, base_dir: Path | None) -> Any:
    if _is_table(value):
        target = _target(value, where, base_dir)
        _check_table_kind(target, hint, where)
        return _resolve_table(value, where, base_dir, target, factory=_wants_factory(target, hint))
    if isinstance(value, list) and any(_is_table(v) for v in value):
        element = next(
            (typing.get_args(m)[0] for m in _members(hint) if typing.get_args(m)), _EMPTY
        )
        return [_resolve_value(v, element, f"{where}[{i}]", base_dir) for i, v in enumerate(value)]
    if not _fits(value, hint):
        given = f"{value!r} ({type(value).__name__})"
        if isinstance(value, dict):
            given = "a table without type or class"
        raise ConfigurationError(f"{where}: expected {_describe(hint)}, got {given}")
    return value


def _resolve_table(
    table: Mapping[str, Any],
    where: str,
    base_dir: Path | None,
    target: Callable[..., Any],
    *,
    factory: bool = False,
) -> dict[str, Any]:
    signature = _signature(target)
    label = getattr(target, "__qualname__", repr(target))
    resolved: dict[str, Any] = {}
    if "type" in table:
        resolved["type"] = table["type"]
    if "class" in table:
        resolved["class"] = _spec(table["class"], where, base_dir)
    arguments = {k: v for k, v in table.items() if k not in RESERVED}
    accepted = [n for n in signature.parameters if where != "trainer" or n not in FROM_CODE_ONLY]
    for key in arguments:
        if key not in accepted and not signature.open_ended:
            raise ConfigurationError(
                f"{where}.{key}: {label} takes no argument {key!r}{_closest(key, accepted)}; "
                f"it takes {', '.join(accepted) or 'no arguments'}"
            )
    for name in accepted:
        parameter = signature.parameters[name]
        if name in arguments:
            hint = signature.hints.get(name, _EMPTY)
            resolved[name] = _resolve_value(arguments[name], hint, f"{where}.{name}", base_dir)
        elif parameter.default is _EMPTY:
            if not factory:
                raise ConfigurationError(
                    f"{where}: {label} needs the argument {name!r}, which the config does not give"
                )
        else:
            writable, value = _plain_default(parameter.default)
            if writable:
                resolved[name] = value
    resolved.update({k: v for k, v in arguments.items() if k not in resolved})  # **kwargs
    return resolved


def resolve(
    config: Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Check ``config`` (with ``overrides``) and return it resolved, every default filled in.

    Args:
        config: the ``model``, ``data`` and ``trainer`` tables.
        overrides: ``"key.path=value"`` strings (``helios fit --set``).
        base_dir: the folder relative ``class = "file.py:Name"`` paths start from (the config
            file's); default the current folder.

    Raises:
        ConfigurationError: anything the objects could not be built from, named by its key.
    """
    base = Path(base_dir) if base_dir is not None else None
    config = apply_overrides(config, overrides, base)
    unknown = [key for key in config if key not in SECTIONS]
    if unknown:
        raise ConfigurationError(
            f"the config has the table(s) {unknown}; it takes {list(SECTIONS)}"
            f"{_closest(unknown[0], SECTIONS)}"
        )
    for section in SECTIONS:
        if not isinstance(config.get(section), Mapping):
            raise ConfigurationError(
                f"the config has no [{section}] table; it needs [model], [data] and [trainer]"
            )
    return {
        section: _resolve_table(
            config[section], section, base, _target(config[section], section, base)
        )
        for section in SECTIONS
    }


def _convert(value: Any, hint: Any) -> Any:
    """Config data as the annotation wants it: a ``Path``, a ``timedelta``, a ``tuple``."""
    for member in _members(hint):
        if isinstance(value, str) and isinstance(member, type) and issubclass(member, os.PathLike):
            return Path(value)
        if member is timedelta and isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if typing.get_origin(member) is tuple and isinstance(value, list):
            return tuple(value)
    return value


def _build_value(value: Any, hint: Any, where: str) -> Any:
    if _is_table(value):
        target = _target(value, where, None)
        return _build_table(value, where, target, factory=_wants_factory(target, hint))
    if isinstance(value, list) and any(_is_table(v) for v in value):
        element = next(
            (typing.get_args(m)[0] for m in _members(hint) if typing.get_args(m)), _EMPTY
        )
        return [_build_value(v, element, f"{where}[{i}]") for i, v in enumerate(value)]
    return _convert(value, hint)


def _build_table(
    table: Mapping[str, Any],
    where: str,
    target: Callable[..., Any],
    *,
    factory: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    hints = _signature(target).hints
    arguments = {
        key: _build_value(value, hints.get(key, _EMPTY), f"{where}.{key}")
        for key, value in table.items()
        if key not in RESERVED
    }
    arguments.update(extra or {})
    if factory:
        return _factory(target, where, arguments)
    try:
        return target(**arguments)
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from error
    except Exception as error:
        label = getattr(target, "__qualname__", repr(target))
        raise ConfigurationError(
            f"{where}: {label}(...) failed: {type(error).__name__}: {error}"
        ) from error


def from_config(
    config: Mapping[str, Any] | str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    allow_change: Sequence[str] = (),
    base_dir: str | os.PathLike[str] | None = None,
) -> ConfiguredRun:
    """Build the model, the data and the trainer a config describes.

    Example:
        >>> model, data, trainer = from_config("docs/examples/digits.toml")  # doctest: +SKIP
        >>> trainer.fit(model, data)  # doctest: +SKIP

    Args:
        config: a TOML file, or the mapping of its tables.
        overrides: ``"key.path=value"`` strings, as ``helios fit --set`` takes.
        allow_change: keys that may differ from the run folder's saved config on resume (as
            ``helios fit --allow-change``).
        base_dir: the folder relative ``class = "file.py:Name"`` paths start from; default the
            config file's folder, or the current folder for a mapping.

    Returns:
        ``(model, data, trainer)``; the trainer keeps the resolved config: it saves it in the
        run folder, hashes it into every checkpoint and refuses to resume a run that was
        started with another.

    Raises:
        ConfigurationError: the config does not describe objects that can be built.
    """
    from helios.data import DataModule
    from helios.trainer._trainer import Trainer

    if isinstance(config, str | os.PathLike):
        base_dir = Path(config).resolve().parent if base_dir is None else base_dir
        config = read_config(config)
    resolved = resolve(config, overrides, base_dir=base_dir)
    trainer = _build_table(
        resolved["trainer"],
        "trainer",
        Trainer,
        extra={"config": resolved, "allow_change": tuple(allow_change)},
    )
    saved = capture_rng_state()
    try:
        # networks made in a constructor get the same weights in every process, every time
        seed_everything(trainer.settings.seed)
        model = _build_table(resolved["model"], "model", _target(resolved["model"], "model", None))
        data = _build_table(resolved["data"], "data", _target(resolved["data"], "data", None))
    finally:
        restore_rng_state(saved)
    if not isinstance(model, Model):
        raise ConfigurationError(
            f"[model] builds a {type(model).__name__}; expected a helios.core.Model"
        )
    if not isinstance(data, DataModule):
        raise ConfigurationError(
            f"[data] builds a {type(data).__name__}; expected a helios.data.DataModule"
        )
    return ConfiguredRun(model, data, trainer)
