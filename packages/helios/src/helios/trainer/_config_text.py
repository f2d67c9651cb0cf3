"""The text of a config: reading TOML, writing it, hashing it, comparing two configs key by key.

A config here is plain data -- tables, lists, strings, numbers, booleans -- as ``tomllib`` reads it
and as the resolved config is saved in a run folder (``config.toml``) and hashed into checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from helios.core import ConfigurationError

__all__ = [
    "ABSENT",
    "config_diff",
    "config_sha256",
    "parse_value",
    "read_config",
    "to_toml",
    "without_run_dir",
]


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


def parse_value(text: str) -> Any:
    """A TOML value (``3e-4``, ``true``, ``[1, 2]``, ``"x"``); anything else is a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


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
