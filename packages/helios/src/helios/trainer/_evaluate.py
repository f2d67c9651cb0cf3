"""Evaluation: the validation pass of ``fit`` and the pass of ``test``, over every sample.

Each batch's metrics are weighted by its number of samples, and sums and counts are added up
over the processes (whose shards may differ by a batch) in one float64 all-reduce, so a mean
metric such as accuracy is the exact mean over the whole dataset. Nothing synchronises per
batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from helios.core import ConfigurationError, DistributedContext, Model
from helios.trainer._step import to_device

__all__ = ["batch_size", "evaluate", "metric_name", "valid_loaders", "validate_sets"]


def batch_size(batch: Any) -> int:
    """The length of the first tensor in a (nested) batch: its number of samples (1 if none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        for item in batch:
            if isinstance(item, torch.Tensor | list | tuple | Mapping):
                return batch_size(item)
    return 1


def evaluate(
    loader: Any,
    step: Callable[[Any, int], Mapping[str, torch.Tensor | float] | None],
    on_batch_start: Callable[[int], None],
    on_batch_end: Callable[[int], None],
    *,
    context: DistributedContext,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    same_batches: bool = False,
) -> dict[str, float]:
    """Run an evaluation loop; the metrics ``step`` returns, averaged over every sample.

    ``same_batches``: every forward pass is a collective (sharded networks), so every rank must
    run as many batches; checked first, with a clear error rather than a hang.
    """
    if same_batches:
        _check_same_batches(loader, context)
    device = context.device
    sums: dict[str, torch.Tensor] = {}
    samples = 0
    with torch.no_grad():
        for index, batch in enumerate(loader):
            on_batch_start(index)
            size = batch_size(batch)
            with autocast():
                output = step(to_device(batch, device), index)
            for name, value in (output or {}).items():
                weighted = torch.as_tensor(value, device=device).detach().float() * size
                sums[name] = sums[name] + weighted if name in sums else weighted
            samples += size
            on_batch_end(index)
    names = sorted(set().union(*context.all_gather_object(sorted(sums))))
    for name, total in sums.items():
        if total.numel() != 1:
            raise ConfigurationError(
                f"metric {name!r} must be a number or a one-element tensor, got a tensor of "
                f"shape {tuple(total.shape)}"
            )
    zero = torch.zeros((), device=device)
    local = [sums.get(name, zero).double().reshape(()) for name in names]
    local.append(torch.tensor(float(samples), dtype=torch.float64, device=device))
    *totals, count = context.all_reduce_sum(torch.stack(local)).tolist()  # one all-reduce
    return {name: total / count for name, total in zip(names, totals, strict=True)} if count else {}


def _check_same_batches(loader: Any, context: DistributedContext) -> None:
    if context.world_size == 1:
        return
    counts = context.all_gather_object(len(loader))
    if len(set(counts)) > 1:
        raise ConfigurationError(
            f"strategy='fsdp' runs every forward pass as a collective, so every rank must "
            f"evaluate as many batches, but this evaluation set gives ranks 0 to "
            f"{len(counts) - 1} {counts} batches; make its size split evenly over the "
            f"{len(counts)} processes and their batches (a multiple of world size x batch size), "
            "or train with strategy='ddp'"
        )


def valid_loaders(data: object) -> dict[str, Any]:
    """The validation sets of ``data`` by name (``""``: the unnamed one), in order.

    ``valid_dataloaders()`` when the data source has it (a :class:`helios.data.DataModule`);
    otherwise the one set of the :class:`~helios.core.DataSource` protocol's
    ``valid_dataloader()``.
    """
    several = getattr(data, "valid_dataloaders", None)
    if callable(several):
        return dict(several())
    loader = data.valid_dataloader()  # type: ignore[attr-defined]
    return {} if loader is None else {"": loader}


def metric_name(valid_set: str, metric: str) -> str:
    """A set's metric as ``Model.valid_metrics`` names it: plain for the unnamed set."""
    return f"{valid_set}/{metric}" if valid_set else metric


def validate_sets(
    loaders: Mapping[str, Any],
    model: Model,
    *,
    context: DistributedContext,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    same_batches: bool = False,
) -> dict[str, float]:
    """Evaluate every validation set in turn; their metrics merged, by :func:`metric_name`.

    ``model.validation_set`` names the set during its pass (``""`` for the unnamed one).
    ``same_batches``: as :func:`evaluate`'s.
    """
    merged: dict[str, float] = {}
    for valid_set, loader in loaders.items():
        model.validation_set = valid_set
        metrics = evaluate(
            loader,
            model.valid_step,
            model.on_validation_batch_start,
            model.on_validation_batch_end,
            context=context,
            autocast=autocast,
            same_batches=same_batches,
        )
        merged.update({metric_name(valid_set, name): value for name, value in metrics.items()})
    model.validation_set = ""
    return merged
