"""helios.dist: distributed training on ``torch.distributed``, with nothing of its own underneath.

It finds out how the process was launched (torchrun, SLURM, or not at all), starts and always
destroys the process group, pins each rank to its GPU, spawns one process per GPU itself when no
launcher did, wraps networks in DDP and offers the few collectives a trainer needs (metric
means, object broadcast and gather, agreement on stop decisions). :class:`TorchDistributed`
implements :class:`helios.core.DistributedContext`. It imports helios.core and torch only.
"""

from __future__ import annotations

from helios.dist._context import CollectiveError, TorchDistributed
from helios.dist._launcher import LauncherKind, LaunchInfo, detect_launcher, expand_nodelist
from helios.dist._port import free_port
from helios.dist._ranks import (
    global_rank,
    is_local_main_process,
    is_main_process,
    local_rank,
    rank_zero_only,
)
from helios.dist._spawn import SpawnError, spawn

__all__ = [
    "CollectiveError",
    "LaunchInfo",
    "LauncherKind",
    "SpawnError",
    "TorchDistributed",
    "detect_launcher",
    "expand_nodelist",
    "free_port",
    "global_rank",
    "is_local_main_process",
    "is_main_process",
    "local_rank",
    "rank_zero_only",
    "spawn",
]
