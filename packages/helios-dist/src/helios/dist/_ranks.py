"""Rank checks that work anywhere: before, during and after a process group exists.

Logging set-up, progress bars and file writes often happen before the trainer builds its
:class:`~helios.dist.TorchDistributed` (or in code that never sees it). These helpers answer
"am I rank 0?" from the live process group when there is one and from the launcher's
environment otherwise, so the answer is the same at every point of a run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch.distributed as dist

from helios.dist._launcher import detect_launcher

__all__ = [
    "global_rank",
    "is_local_main_process",
    "is_main_process",
    "local_rank",
    "rank_zero_only",
]

P = ParamSpec("P")
R = TypeVar("R")


def global_rank() -> int:
    """This process's global rank: the process group's if one is running, else the launcher's."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return detect_launcher().rank


def local_rank() -> int:
    """This process's rank on its node, as its launcher set it (0 without a launcher)."""
    return detect_launcher().local_rank


def is_main_process() -> bool:
    """Whether this is global rank 0 (the process that logs, writes checkpoints, shows bars)."""
    return global_rank() == 0


def is_local_main_process() -> bool:
    """Whether this is local rank 0 (the process that downloads or unpacks a node's files)."""
    return local_rank() == 0


def rank_zero_only(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Make ``fn`` run on global rank 0 only; on other ranks the call does nothing.

    The rank is looked up at each call, not at decoration, so a function decorated at import
    time behaves right in every process a launcher starts.

    Args:
        fn: the function to guard.

    Returns:
        A function that calls ``fn`` and returns its result on rank 0, and returns ``None``
        without calling it elsewhere.

    Example:
        >>> @rank_zero_only
        ... def announce(message: str) -> None:
        ...     print(message)
    """

    @functools.wraps(fn)
    def on_rank_zero(*args: P.args, **kwargs: P.kwargs) -> R | None:
        if is_main_process():
            return fn(*args, **kwargs)
        return None

    return on_rank_zero
