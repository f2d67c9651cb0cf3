"""Plain weights files: the networks' parameters and buffers alone, for anyone to load.

A Helios checkpoint holds much more than weights (optimizers, RNG states, the data position) and
starts with a verification prelude, so plain ``torch.load`` cannot open it. A weights file is
what to hand to someone else: one ``torch.save`` of a dict of tensors that
``torch.load(path, weights_only=True)`` opens anywhere, without Helios::

    {
        "format": "helios-weights/1",
        "networks": {"net": {"0.weight": tensor, ...}, ...},  # one state_dict per network
        "source": {"step": "1200", "sha256": "...", ...},     # where it came from (strings)
    }

``helios checkpoints extract CHECKPOINT -o FILE`` writes one from a checkpoint,
:meth:`helios.core.Model.save_weights` from a model in memory, and
:meth:`helios.core.Model.load_weights` reads one back into a model's networks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from helios.core._errors import ConfigurationError, ResumeError

__all__ = ["WEIGHTS_FORMAT", "load_network_weights", "read_weights", "write_weights"]

WEIGHTS_FORMAT = "helios-weights/1"


def write_weights(
    networks: Mapping[str, Mapping[str, torch.Tensor]],
    path: str | os.PathLike[str],
    *,
    source: Mapping[str, str] | None = None,
) -> Path:
    """Write ``networks`` (name → state_dict) as a weights file, atomically.

    The tensors are copied to the CPU; the file appears complete or not at all (written beside
    the target, flushed, then renamed over it).

    Returns:
        the path written.
    """
    target = Path(path)
    if target.is_dir():
        raise ConfigurationError(f"path={str(path)!r} is a folder; expected a file to write")
    payload: dict[str, Any] = {
        "format": WEIGHTS_FORMAT,
        "networks": {
            str(name): {key: value.detach().cpu() for key, value in state.items()}
            for name, state in networks.items()
        },
        "source": {str(key): str(value) for key, value in (source or {}).items()},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def read_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a weights file (``weights_only``, onto the CPU) and check its format.

    Raises:
        ConfigurationError: the file does not exist, or is not a Helios weights file (a
            checkpoint is named as such, with the command that extracts weights from it).
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigurationError(f"path={str(path)!r} does not exist; expected a weights file")
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:
        hint = ""
        with source.open("rb") as file:
            if file.read(10) == b"HELIOSCKPT":
                hint = (
                    f"; it is a Helios checkpoint: run `helios checkpoints extract {source} -o "
                    "WEIGHTS.pt` to get a weights file"
                )
        raise ConfigurationError(
            f"path={str(path)!r} is not a weights file torch.load can read "
            f"({type(error).__name__}){hint}"
        ) from error
    if not isinstance(loaded, dict) or loaded.get("format") != WEIGHTS_FORMAT:
        found = loaded.get("format") if isinstance(loaded, dict) else type(loaded).__name__
        raise ConfigurationError(
            f"path={str(path)!r} holds {found!r}, not a Helios weights file (format "
            f"{WEIGHTS_FORMAT!r})"
        )
    return loaded


def load_network_weights(
    current: Mapping[str, torch.nn.Module], saved: Mapping[str, Any], path: str, *, strict: bool
) -> None:
    """Load each saved network's state into the network of the same name.

    Raises:
        ResumeError: the names differ, or a network does not fit its saved state.
    """
    if strict and set(saved) != set(current):
        raise ResumeError(
            f"the weights file {path} holds networks {sorted(saved)} but the model has "
            f"{sorted(current)}; pass strict=False to load only those with matching names"
        )
    for name in sorted(set(saved) & set(current)):
        try:
            current[name].load_state_dict(saved[name], strict=strict)
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise ResumeError(
                f"network {name!r} does not fit its weights in {path}: {first}"
            ) from error
