"""Seeding, capture and restore of every random number generator a training run touches.

Exact resume needs the main process's randomness (dropout, random crops drawn outside the
loader, ...) to continue where it stopped. :func:`capture_rng_state` takes a snapshot of Python's
``random``, NumPy's legacy global RNG, Helios' own NumPy ``Generator``, torch's CPU generator and
the generator of *every* CUDA device; :func:`restore_rng_state` puts it back. The snapshot holds
only tensors, numbers, strings, lists and dicts, so it survives ``torch.save`` followed by
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import numpy as np
import torch

from helios.core._errors import ConfigurationError, ResumeError

__all__ = [
    "capture_rng_state",
    "numpy_generator",
    "restore_rng_state",
    "seed_everything",
    "set_deterministic",
]

_MAX_SEED = 2**32 - 1
# Helios' own NumPy generator: for user code that wants NumPy randomness without the legacy
# global state. It is one object for the life of the process (re-seeded in place), so a
# reference taken early stays valid.
_NUMPY_GENERATOR = np.random.Generator(np.random.PCG64(0))
_STATE_VERSION = 1


def numpy_generator() -> np.random.Generator:
    """Helios' NumPy generator: seeded by :func:`seed_everything`, captured and restored."""
    return _NUMPY_GENERATOR


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigurationError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    if not 0 <= int(seed) <= _MAX_SEED:
        raise ConfigurationError(f"seed must be in [0, 2**32 - 1], got {seed}")
    return int(seed)


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy (legacy and Helios' generator), torch on the CPU and every CUDA device.

    Args:
        seed: an integer in ``[0, 2**32 - 1]``.

    Returns:
        The seed, so it can be logged.

    Raises:
        ConfigurationError: the seed is not an int in range.
    """
    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    _NUMPY_GENERATOR.bit_generator.state = np.random.PCG64(seed).state
    torch.manual_seed(seed)  # also seeds every CUDA device, lazily if CUDA is not yet initialised
    return seed


def capture_rng_state() -> dict[str, Any]:
    """Snapshot every random number generator of this process.

    Returns:
        A dict of tensors, ints, floats, strings and lists, safe for
        ``torch.load(weights_only=True)``.
    """
    version, mt_state, gauss_next = random.getstate()
    legacy = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "version": _STATE_VERSION,
        "python": {
            "version": version,
            "state": torch.tensor(mt_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy_legacy": {
            "bit_generator": legacy["bit_generator"],
            "key": torch.from_numpy(legacy["state"]["key"].astype(np.int64)),
            "pos": int(legacy["state"]["pos"]),
            "has_gauss": int(legacy["has_gauss"]),
            "gauss": float(legacy["gauss"]),
        },
        "numpy_generator": _NUMPY_GENERATOR.bit_generator.state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back a snapshot taken by :func:`capture_rng_state`.

    CUDA states are restored device by device; if this machine has fewer CUDA devices than the
    one that captured the state, the surplus states are ignored with a warning (the devices that
    remain continue exactly).

    Raises:
        ResumeError: the snapshot is not one :func:`capture_rng_state` made.
    """
    try:
        if state["version"] != _STATE_VERSION:
            raise ResumeError(
                f"RNG state has version {state['version']!r}; this Helios reads version "
                f"{_STATE_VERSION}"
            )
        python = state["python"]
        mt_state = tuple(int(v) for v in python["state"].tolist())
        random.setstate((python["version"], mt_state, python["gauss_next"]))
        legacy = state["numpy_legacy"]
        np.random.set_state(
            (
                legacy["bit_generator"],
                legacy["key"].numpy().astype(np.uint32),
                legacy["pos"],
                legacy["has_gauss"],
                legacy["gauss"],
            )
        )
        _NUMPY_GENERATOR.bit_generator.state = state["numpy_generator"]
        torch.set_rng_state(state["torch"])
        cuda_states = list(state["cuda"])
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ResumeError(f"RNG state is malformed: {error!r}") from error
    if cuda_states and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(cuda_states) > count:
            warnings.warn(
                f"the RNG state holds {len(cuda_states)} CUDA devices; this process sees {count}:"
                f" restoring the first {count}",
                RuntimeWarning,
                stacklevel=2,
            )
        for device, cuda_state in enumerate(cuda_states[:count]):
            torch.cuda.set_rng_state(cuda_state, device)
    elif cuda_states:
        warnings.warn(
            "the RNG state holds CUDA generators but CUDA is not available here; they are ignored",
            RuntimeWarning,
            stacklevel=2,
        )


def set_deterministic(enabled: bool = True, *, warn_only: bool = False) -> None:
    """Switch PyTorch to deterministic kernels, or back.

    When enabled: ``torch.use_deterministic_algorithms(True)``, cuDNN deterministic and its
    auto-tuner (``benchmark``) off, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless the user set
    it (cuBLAS reads it when CUDA starts, so call this before the first CUDA operation).
    An operation with no deterministic implementation then raises (or warns with
    ``warn_only=True``) instead of silently breaking bitwise reproducibility.

    Args:
        enabled: turn deterministic mode on (``True``) or off.
        warn_only: warn instead of raising on a non-deterministic operation.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.backends.cudnn.benchmark
