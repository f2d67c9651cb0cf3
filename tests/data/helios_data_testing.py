"""A dataset with random augmentation from Python, NumPy and torch, and a resuming child process.

Run as a script, it is the "fresh loader in a new process": for each saved loader state given on
the command line it builds a new loader, loads the state and writes the remaining batches:

    python helios_data_testing.py NUM_WORKERS OUT STATE [STATE ...]
"""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from helios.data import ResumableDataLoader, ResumableSampler

SIZE = 42
BATCH = 4
SEED = 17
EPOCH = 1


class Augmented(Dataset[tuple[torch.Tensor, int]]):
    """Sample ``i``: ``[i, random.random(), np.random.rand(), *torch.rand(2)]``, label ``i``."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        drawn = [float(index), random.random(), float(np.random.rand())]
        noise = torch.rand(2, dtype=torch.float64)
        return torch.cat([torch.tensor(drawn, dtype=torch.float64), noise]), index


def make_loader(num_workers: int, *, size: int = SIZE, **kwargs: Any) -> ResumableDataLoader[Any]:
    """The loader every resume test uses: random order, epoch ``EPOCH``."""
    sampler = ResumableSampler(size, shuffle=True, seed=SEED)
    sampler.set_epoch(EPOCH)
    return ResumableDataLoader(
        Augmented(size), sampler, batch_size=BATCH, num_workers=num_workers, **kwargs
    )


def main(argv: list[str]) -> None:
    num_workers, out, *states = argv
    results = []
    for path in states:
        loader = make_loader(int(num_workers))
        loader.load_state_dict(torch.load(path, weights_only=True))
        loader.set_epoch(EPOCH)  # the current epoch: a no-op that keeps the position
        results.append(list(loader))
    torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1:])
