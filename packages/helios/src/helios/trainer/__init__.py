"""helios.trainer.

The ``Trainer`` that drives a ``Model`` over a ``DataModule``, and the ``helios`` command.
"""

from __future__ import annotations

__all__: list[str] = []
