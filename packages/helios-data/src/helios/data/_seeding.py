"""Per-sample seeding: random augmentation that does not depend on who fetched the sample.

With plain PyTorch, random augmentation in ``__getitem__`` draws from the RNG of whichever worker
fetches the sample, so its values change with ``num_workers``, with the worker a sample lands on
and with where a run was resumed. Here every fetch is a *key*, ``(index, seed)``, where the seed
is a pure function of ``(seed, epoch, position in the epoch)``; :class:`SeededDataset` seeds
Python's ``random``, NumPy's legacy global RNG and torch's CPU generator from it just before
calling the user's ``__getitem__``. The global RNG states are put back afterwards, so loading in
the main process (``num_workers=0``) leaves the training loop's randomness untouched.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sized
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

__all__ = ["SeededDataset", "preserved_global_rng", "seed_sample"]

T_co = TypeVar("T_co", covariant=True)

SampleKey = tuple[int, int]


def seed_sample(seed: int) -> None:
    """Seed Python's ``random``, NumPy's legacy global RNG and torch's CPU RNG for one sample.

    Args:
        seed: a 64-bit sample seed (NumPy's legacy RNG takes its upper 32 bits).
    """
    random.seed(seed)
    np.random.seed(seed >> 32)
    # The CPU generator only: torch.manual_seed would also reseed every CUDA device.
    torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Run a block and put Python's, NumPy's legacy and torch's CPU RNG states back afterwards."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


class SeededDataset(Dataset[T_co], Generic[T_co]):
    """A map-style dataset read with ``(index, seed)`` keys, seeding the RNGs per sample.

    :class:`~helios.data.ResumableDataLoader` builds one around the user's dataset; the user's
    dataset stays a plain ``Dataset`` with ``__getitem__(index)``. A user dataset's own
    ``__getitems__`` (batched fetching) is bypassed: each sample needs its own seed.

    Args:
        dataset: the map-style dataset to read.
    """

    def __init__(self, dataset: Dataset[T_co]) -> None:
        """Wrap ``dataset``."""
        self.dataset = dataset

    def __getitem__(self, key: SampleKey) -> T_co:
        """Fetch one sample with its RNGs seeded from the key's seed."""
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[SampleKey]) -> list[T_co]:
        """Fetch a batch of samples, each with its own seed; the RNG states are kept."""
        # A worker's own RNG state matters to no one; the main process's must be kept.
        in_worker = get_worker_info() is not None
        with contextlib.nullcontext() if in_worker else preserved_global_rng():
            samples = []
            for index, seed in keys:
                seed_sample(seed)
                samples.append(self.dataset[index])
        return samples

    def __len__(self) -> int:
        """The wrapped dataset's length."""
        dataset: Any = self.dataset
        if not isinstance(dataset, Sized):
            raise TypeError(f"{type(dataset).__name__} has no len()")
        return len(dataset)
