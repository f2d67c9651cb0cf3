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
what was expected. The *resolved* config -- every default that TOML can write filled in, class
files as written (relative to the config's folder: a project moved with its config is the same
run) -- is what is printed, saved in the run folder and hashed into checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import os
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from helios.core import (
    ConfigurationError,
    Model,
    capture_rng_state,
    restore_rng_state,
    seed_everything,
)
from helios.trainer._config_targets import (
    FROM_CODE_ONLY,
    RESERVED,
    SECTIONS,
    apply_overrides,
    closest,
    signature_of,
    spec_of,
    table_target,
    target_of,
)
from helios.trainer._config_text import (
    ABSENT,
    config_diff,
    config_sha256,
    read_config,
    to_toml,
    without_run_dir,
)
from helios.trainer._config_types import (
    EMPTY,
    check_table_kind,
    convert,
    describe,
    fits,
    is_table,
    plain_default,
    union_members,
    wants_factory,
)

if typing.TYPE_CHECKING:
    from helios.data import DataModule
    from helios.trainer._trainer import Trainer

__all__ = [
    "ABSENT",
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


# ---- resolving and building -----------------------------------------------------------------


def _resolve_value(value: Any, hint: Any, where: str, base_dir: Path | None) -> Any:
    if is_table(value):
        target = table_target(value, where, base_dir)
        check_table_kind(target, hint, where)
        return _resolve_table(value, where, base_dir, target, factory=wants_factory(target, hint))
    if isinstance(value, list) and any(is_table(v) for v in value):
        element = next(
            (typing.get_args(m)[0] for m in union_members(hint) if typing.get_args(m)), EMPTY
        )
        return [_resolve_value(v, element, f"{where}[{i}]", base_dir) for i, v in enumerate(value)]
    if not fits(value, hint):
        given = f"{value!r} ({type(value).__name__})"
        if isinstance(value, dict):
            given = "a table without type or class"
        raise ConfigurationError(f"{where}: expected {describe(hint)}, got {given}")
    return value


def _resolve_table(
    table: Mapping[str, Any],
    where: str,
    base_dir: Path | None,
    target: Callable[..., Any],
    *,
    factory: bool = False,
) -> dict[str, Any]:
    signature = signature_of(target)
    label = getattr(target, "__qualname__", repr(target))
    resolved: dict[str, Any] = {}
    if "type" in table:
        resolved["type"] = table["type"]
    if "class" in table:
        resolved["class"] = spec_of(table["class"], where)
    arguments = {k: v for k, v in table.items() if k not in RESERVED}
    accepted = [n for n in signature.parameters if where != "trainer" or n not in FROM_CODE_ONLY]
    for key in arguments:
        if key not in accepted and not signature.open_ended:
            raise ConfigurationError(
                f"{where}.{key}: {label} takes no argument {key!r}{closest(key, accepted)}; "
                f"it takes {', '.join(accepted) or 'no arguments'}"
            )
    for name in accepted:
        parameter = signature.parameters[name]
        if name in arguments:
            hint = signature.hints.get(name, EMPTY)
            resolved[name] = _resolve_value(arguments[name], hint, f"{where}.{name}", base_dir)
        elif parameter.default is EMPTY:
            if not factory:
                raise ConfigurationError(
                    f"{where}: {label} needs the argument {name!r}, which the config does not give"
                )
        else:
            writable, value = plain_default(parameter.default)
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
            f"{closest(unknown[0], SECTIONS)}"
        )
    for section in SECTIONS:
        if not isinstance(config.get(section), Mapping):
            raise ConfigurationError(
                f"the config has no [{section}] table; it needs [model], [data] and [trainer]"
            )
    return {
        section: _resolve_table(
            config[section], section, base, table_target(config[section], section, base)
        )
        for section in SECTIONS
    }


def _build_value(value: Any, hint: Any, where: str, base_dir: Path) -> Any:
    if is_table(value):
        target = table_target(value, where, base_dir)
        return _build_table(value, where, base_dir, target, factory=wants_factory(target, hint))
    if isinstance(value, list) and any(is_table(v) for v in value):
        element = next(
            (typing.get_args(m)[0] for m in union_members(hint) if typing.get_args(m)), EMPTY
        )
        return [_build_value(v, element, f"{where}[{i}]", base_dir) for i, v in enumerate(value)]
    return convert(value, hint)


def _build_table(
    table: Mapping[str, Any],
    where: str,
    base_dir: Path,
    target: Callable[..., Any],
    *,
    factory: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    hints = signature_of(target).hints
    arguments = {
        key: _build_value(value, hints.get(key, EMPTY), f"{where}.{key}", base_dir)
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
            config file's folder, or the current folder for a mapping. The paths stay relative
            in the resolved config; the trainer keeps the folder (``config_dir``).

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
        base_dir = Path(config).parent if base_dir is None else base_dir
        config = read_config(config)
    base = Path(base_dir if base_dir is not None else Path.cwd()).resolve()
    resolved = resolve(config, overrides, base_dir=base)
    trainer = _build_table(
        resolved["trainer"],
        "trainer",
        base,
        Trainer,
        extra={"config": resolved, "allow_change": tuple(allow_change), "config_dir": base},
    )
    saved = capture_rng_state()
    try:
        # networks made in a constructor get the same weights in every process, every time
        seed_everything(trainer.settings.seed)
        model, data = (
            _build_table(resolved[key], key, base, target_of(resolved[key], key, base))
            for key in ("model", "data")
        )
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
