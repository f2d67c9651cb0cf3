"""Prediction: ``Model.predict_step`` over the prediction data, outputs back in dataset order.

Each rank reads its shard of the prediction dataset (in order, sharded without padding, as the
test data: rank ``r`` of ``W`` reads samples ``r, r + W, ...``), under the run's autocast and on
its device, with the networks in eval mode and without gradients. Every batch's output is
copied to the CPU with the dataset indices of its samples (from the loader's batch sampler);
under several processes one ``all_gather_object`` hands every rank all of them. The rows are put
in dataset order (a sample seen twice keeps its first row, so a padding sampler adds nothing)
and cut again into batches of the loader's batch size: the result is the same list whatever
the number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from helios.core import ConfigurationError, DataSource, DistributedContext, Model, seed_everything
from helios.trainer import _checkpoint, _lock, _seams, _wiring
from helios.trainer._launch import device_kind
from helios.trainer._precision import Precision
from helios.trainer._settings import Settings
from helios.trainer._step import to_device

__all__ = ["run_predict"]


def run_predict(
    settings: Settings,
    model: Model,
    data: DataSource,
    checkpoint: str | os.PathLike[str] | None,
) -> list[Any]:
    """Predict in this process (one rank of the job); see :meth:`Trainer.predict`."""
    context = settings.distributed or _wiring.build_context(
        settings.backend, settings.timeout, device_kind(settings)
    )
    try:
        if checkpoint is None:  # the model in memory: nothing under run_dir is read or written
            return _predict(settings, model, data, context, None)
        with _lock.hold_run_folder(settings.run_dir, "predict", context):
            logger = _wiring.start_logging(settings.run_dir, context)
            try:
                outputs = _predict(settings, model, data, context, checkpoint)
                logger.info("predicted %d batch(es) with checkpoint %s", len(outputs), checkpoint)
                return outputs
            except BaseException:
                logger.exception("prediction failed on rank %d", context.rank)
                raise
            finally:
                _wiring.stop_logging()
    finally:
        if settings.distributed is None:
            context.close()


def _predict(
    settings: Settings,
    model: Model,
    data: DataSource,
    context: DistributedContext,
    checkpoint: str | os.PathLike[str] | None,
) -> list[Any]:
    seed_everything(settings.seed)
    data.configure(rank=context.rank, world_size=context.world_size, seed=settings.seed)
    data.setup()
    if checkpoint is None:
        if not model.networks():
            model.setup()
    else:
        model.setup()
        with _seams.checkpoint_store(settings, model) as store:
            info = _checkpoint.find_checkpoint(store, checkpoint, settings.run_dir)
            saved = _checkpoint.load(store, info.path, map_location=context.device)
        model.load_state_dict(_checkpoint.model_state(saved, info.path))
    model.to(context.device)
    make_loader = getattr(data, "predict_dataloader", None)
    loader = make_loader() if callable(make_loader) else None
    if loader is None:
        raise ConfigurationError(
            f"{type(data).__name__} has no prediction data: call add_predict(dataset, params) "
            "in its setup()"
        )
    autocast = Precision(settings.precision, context.device, model, automatic=False).autocast
    model.eval()
    model.on_predict_start()
    indices: list[int] = []
    outputs: list[Any] = []
    with torch.no_grad():
        for index, (batch, keys) in enumerate(zip(loader, _batch_indices(loader), strict=True)):
            with autocast():
                output = model.predict_step(to_device(batch, context.device), index)
            outputs.append(_to_cpu(output, len(keys), type(model).__name__))
            indices.extend(keys)
    model.on_predict_end()
    shards = context.all_gather_object((indices, outputs)) if context.is_distributed else None
    if shards is not None:
        indices = [i for shard, _ in shards for i in shard]
        outputs = [o for _, shard in shards for o in shard]
    size = len(loader.dataset) if hasattr(loader, "dataset") else len(set(indices))
    return _in_order(indices, outputs, size, getattr(loader.batch_sampler, "batch_size", 1))


def _batch_indices(loader: Any) -> Iterator[list[int]]:
    """The dataset indices of each batch, from the loader's batch sampler."""
    keys = getattr(loader, "batch_sampler", None)
    if keys is None:
        raise ConfigurationError(
            "predict_dataloader() must return a DataLoader with a batch sampler (the "
            "DataModule's own): its indices put the predictions in dataset order"
        )
    for key in keys:
        # helios.data's BatchKeys yields (seed, indices); torch's BatchSampler yields indices
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], list):
            yield [int(i) for i in key[1]]
        else:
            yield [int(i) for i in key]


def _to_cpu(output: Any, rows: int, model: str) -> Any:
    """``output`` on the CPU, checked: tensors (in tuples, lists, dicts) of ``rows`` rows."""
    if isinstance(output, torch.Tensor):
        if output.dim() == 0 or output.shape[0] != rows:
            raise ConfigurationError(
                f"{model}.predict_step must return tensors with one row per sample ({rows} in "
                f"this batch), got one of shape {tuple(output.shape)}"
            )
        return output.detach().cpu()
    if isinstance(output, Mapping):
        return {key: _to_cpu(value, rows, model) for key, value in output.items()}
    if isinstance(output, tuple | list):
        return type(output)(_to_cpu(value, rows, model) for value in output)
    raise ConfigurationError(
        f"{model}.predict_step must return a tensor (or a tuple, list or dict of tensors), "
        f"got {type(output).__name__}"
    )


def _concat(outputs: list[Any]) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, Mapping):
        return {key: _concat([o[key] for o in outputs]) for key in first}
    return type(first)(_concat([o[i] for o in outputs]) for i in range(len(first)))


def _rows(output: Any, rows: slice | torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return output[rows]
    if isinstance(output, Mapping):
        return {key: _rows(value, rows) for key, value in output.items()}
    return type(output)(_rows(value, rows) for value in output)


def _in_order(indices: list[int], outputs: list[Any], size: int, batch_size: int) -> list[Any]:
    """The rows of ``outputs`` (one per entry of ``indices``) in dataset order, in batches."""
    if not outputs:
        return []
    first_row: dict[int, int] = {}
    for row, sample in enumerate(indices):
        first_row.setdefault(sample, row)  # a padded duplicate keeps the first prediction
    missing = sorted(set(range(size)) - first_row.keys())
    if missing:
        raise ConfigurationError(
            f"the prediction loaders left {len(missing)} sample(s) without a prediction "
            f"(first: {missing[:5]}); use the DataModule's predict_dataloader"
        )
    order = torch.tensor([first_row[sample] for sample in range(size)], dtype=torch.long)
    rows = _rows(_concat(outputs), order)
    step = max(batch_size, 1)
    return [_rows(rows, slice(start, start + step)) for start in range(0, size, step)]
