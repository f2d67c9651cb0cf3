"""helios.data.

Exactly resumable samplers, per-sample seeded data-loader workers and the DataModule.
"""

from __future__ import annotations

__all__: list[str] = []
