"""helios.ckpt.

Checkpoints that are written atomically, verified on load, loaded safely (weights only), pruned
by retention rules, and fall back to the last good one.
"""

from __future__ import annotations

__all__: list[str] = []
