"""Metrics between a step and a logger: running means, and one reduction across ranks.

Training metrics are summed on the device as steps go (no step waits for the host); at a logging
point they are averaged over the processes in one all-reduce with one copy to the host, and
handed to the metric logger as floats, on global rank 0 only. Loggers never reduce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from helios.core import DistributedContext

__all__ = ["RunningMeans", "reduce_once"]


class RunningMeans:
    """Running sums of metrics, kept on the device so no step waits for the host."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, metrics: Mapping[str, torch.Tensor | float]) -> None:
        """Add one step's metrics."""
        sums = self.sums
        for name, raw in metrics.items():
            value = raw.detach() if isinstance(raw, torch.Tensor) else raw
            total = sums.get(name)
            if total is None:
                sums[name] = torch.as_tensor(value, device=self.device).to(torch.float32, copy=True)
            else:
                total.add_(value)
        self.count += 1

    def means(self) -> dict[str, torch.Tensor]:
        """The means since the last reset (still on the device)."""
        return {name: total / max(self.count, 1) for name, total in self.sums.items()}

    def reset(self) -> None:
        """Forget what was added."""
        self.sums, self.count = {}, 0

    def state_dict(self) -> dict[str, Any]:
        """The sums (on the CPU) and the count."""
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.count = int(state["count"])


def reduce_once(
    context: DistributedContext, metrics: Mapping[str, torch.Tensor | float]
) -> dict[str, float]:
    """Average ``metrics`` over the processes: one copy to the host, one all-reduce.

    The tensors (one element each) are stacked and copied to the host together; the floats go
    as they are (a float32 stack would round them). Every rank must pass the same names; the
    means come back in the order of the sorted names.
    """
    values: dict[str, float | torch.Tensor] = {name: metrics[name] for name in sorted(metrics)}
    tensors = [name for name, value in values.items() if isinstance(value, torch.Tensor)]
    if tensors:
        stacked = torch.stack([values[name].detach().reshape(()).float() for name in tensors])  # type: ignore[union-attr]
        for name, value in zip(tensors, stacked.tolist(), strict=True):
            values[name] = value
    return context.all_reduce_mean(values)
