"""Metric values as plain floats, averaged across ranks before anything logs them.

Each rank computes its loss on its own shard of the batch; the number worth plotting is the mean
over ranks. :func:`reduce_metrics` asks the core ``DistributedContext`` for that mean, so this
package needs no import of ``helios.dist`` and works with any context a user supplies.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch

from helios.core import ConfigurationError, DistributedContext

__all__ = ["reduce_metrics", "scalar_value"]


def scalar_value(name: str, value: Any) -> float:
    """``value`` as a Python float: a real number or a one-element tensor.

    Args:
        name: the metric's name, for the error message.
        value: the metric's value.

    Returns:
        The value as a float.

    Raises:
        ConfigurationError: the value is not a real number or a one-element tensor.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise ConfigurationError(
                f"metric {name!r} must be a real number or a one-element tensor, got a tensor "
                f"of shape {tuple(value.shape)} and dtype {value.dtype}"
            )
        return float(value.detach().item())
    if isinstance(value, numbers.Real):
        return float(value)
    raise ConfigurationError(
        f"metric {name!r} must be a real number or a one-element tensor, got {value!r}"
    )


def _check_names(metrics: Mapping[str, Any]) -> None:
    for name in metrics:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"metric names must be non-empty strings, got {name!r}")


def reduce_metrics(
    metrics: Mapping[str, float | torch.Tensor],
    context: DistributedContext | None = None,
) -> dict[str, float]:
    """Average each metric over every rank (collective: call it on every rank).

    Every rank must pass the same names. Without a context, or in a single process, the metrics
    come back as floats without any communication.

    Args:
        metrics: this rank's values, numbers or one-element tensors.
        context: the process group; ``None`` for a single process.

    Returns:
        The mean of each metric over the ranks, in the order of the sorted names (the order
        the values travel in, the same on every rank).

    Raises:
        ConfigurationError: a name is not a string or a value is not a scalar.
    """
    _check_names(metrics)
    ordered = {name: metrics[name] for name in sorted(metrics)}
    if context is None or not context.is_distributed:
        return {name: scalar_value(name, value) for name, value in ordered.items()}
    for name, value in ordered.items():
        # A one-element tensor travels as it is (no device sync here); anything else is checked.
        if not (isinstance(value, torch.Tensor) and value.numel() == 1):
            scalar_value(name, value)
    reduced = context.all_reduce_mean(ordered)
    return {name: scalar_value(name, reduced[name]) for name in ordered}
