"""helios.data: exactly resumable samplers, seeded data loading and the ``DataModule``.

The order of every epoch is a pure function of (seed, epoch); the position is the number of
samples the training loop has consumed, counted over all ranks; randomness inside
``__getitem__`` and ``collate_fn`` is seeded per batch from (seed, epoch, position). Together: a
run stopped anywhere and resumed (at any number of workers or ranks) sees exactly the batches it
would have seen. The sampler and the loader need torch alone and work in a hand-written loop;
:class:`DataModule` is what the Helios trainer drives.
"""

from __future__ import annotations

from helios.data._datamodule import DataModule, TrainingPhase
from helios.data._loader import ResumableDataLoader
from helios.data._params import DataLoaderParams
from helios.data._permutation import FeistelPermutation
from helios.data._position import PositionClaim, SamplePosition
from helios.data._registries import (
    COLLATE_REGISTRY,
    DATAMODULE_REGISTRY,
    DATASET_REGISTRY,
    SAMPLER_REGISTRY,
)
from helios.data._sampler import ResumableSampler
from helios.data._seeding import BatchKey, SeededDataset, seed_batch

__all__ = [
    "COLLATE_REGISTRY",
    "DATAMODULE_REGISTRY",
    "DATASET_REGISTRY",
    "SAMPLER_REGISTRY",
    "BatchKey",
    "DataLoaderParams",
    "DataModule",
    "FeistelPermutation",
    "PositionClaim",
    "ResumableDataLoader",
    "ResumableSampler",
    "SamplePosition",
    "SeededDataset",
    "TrainingPhase",
    "seed_batch",
]
