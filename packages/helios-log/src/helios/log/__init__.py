"""helios.log.

Rank-aware file logging, TensorBoard and plain metric files, and tqdm progress bars.
"""

from __future__ import annotations

__all__: list[str] = []
