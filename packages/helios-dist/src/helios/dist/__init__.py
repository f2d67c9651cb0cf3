"""helios.dist.

Distributed training on torch.distributed: launcher detection (torchrun, SLURM), process groups,
auto-spawn, DDP wrapping and collectives.
"""

from __future__ import annotations

__all__: list[str] = []
