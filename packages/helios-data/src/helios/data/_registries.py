"""The registries helios-data adds: datasets, collate functions and samplers, by name.

Configuration names things; these turn the names into objects. They come pre-filled with
PyTorch's own datasets and collate functions and with Helios' sampler, and users add theirs with
``@DATASET_REGISTRY.register``. ``DataLoaderParams(collate_fn="name")`` and
``DataLoaderParams(sampler="name")`` are looked up here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch.utils.data import (
    ConcatDataset,
    Dataset,
    StackDataset,
    Subset,
    TensorDataset,
    default_collate,
    default_convert,
)

from helios.core import Registry
from helios.data._sampler import ResumableSampler

if TYPE_CHECKING:  # _datamodule imports this module
    from helios.data._datamodule import DataModule

__all__ = ["COLLATE_REGISTRY", "DATAMODULE_REGISTRY", "DATASET_REGISTRY", "SAMPLER_REGISTRY"]

DATASET_REGISTRY: Registry[Callable[..., Dataset[Any]]] = Registry("datasets")
"""Datasets by name; holds torch's ``TensorDataset``, ``ConcatDataset``, ``Subset``, ..."""

COLLATE_REGISTRY: Registry[Callable[[list[Any]], Any]] = Registry("collate functions")
"""Collate functions by name; pre-filled with ``default_collate`` and ``default_convert``."""

SAMPLER_REGISTRY: Registry[Callable[..., ResumableSampler]] = Registry("samplers")
"""Sampler factories by name, called like :class:`ResumableSampler`; holds ``ResumableSampler``."""

DATAMODULE_REGISTRY: Registry[Callable[..., DataModule]] = Registry("data modules")
"""``DataModule`` subclasses by name, for ``[data] type = "..."`` of a configuration file."""

for _dataset in (TensorDataset, ConcatDataset, Subset, StackDataset):
    DATASET_REGISTRY.register(_dataset)
COLLATE_REGISTRY.register(default_collate, name="default_collate")
COLLATE_REGISTRY.register(default_convert, name="default_convert")
SAMPLER_REGISTRY.register(ResumableSampler)
