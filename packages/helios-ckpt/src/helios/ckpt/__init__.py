"""helios.ckpt: checkpoints that survive crashes, corruption and untrusted files.

Checkpoints are written atomically, verified (size and SHA-256) on load, loaded safely
(``torch.load(weights_only=True)`` only), pruned by retention rules (keep the last N, keep the best
K by a metric), and a damaged newest checkpoint falls back to the last good one.
:class:`DirectoryCheckpointStore` implements :class:`helios.core.CheckpointStore` and
:class:`helios.core.ShardedCheckpointStore`: besides single files it keeps sharded checkpoints,
a folder per step that every rank writes through ``torch.distributed.checkpoint``, committed by
a manifest; :func:`consolidate` turns one into a single file.
"""

from __future__ import annotations

from helios.ckpt._format import FORMAT_VERSION
from helios.ckpt._migrations import register_migration
from helios.ckpt._store import CheckpointEntry, DirectoryCheckpointStore, consolidate
from helios.ckpt._warnings import CheckpointWarning
from helios.core import CheckpointError, CheckpointInfo

__all__ = [
    "FORMAT_VERSION",
    "CheckpointEntry",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointWarning",
    "DirectoryCheckpointStore",
    "consolidate",
    "register_migration",
]
