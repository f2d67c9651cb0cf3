"""Release smoke test of helios-data: the resumable sampler drives a raw, hand-written loop.

Runs inside a fresh virtual environment holding only the helios-data wheel, helios-core, torch
and NumPy (``tools/release/check_wheels.py`` sets it up). It checks what a user of the wheel alone
relies on: a plain PyTorch loop stopped mid-epoch and resumed from a saved state sees exactly the
samples of the uninterrupted epoch, with a ``torch.utils.data.DataLoader`` and with Helios' own
loader (two workers, random augmentation), and importing ``helios.data`` pulls in no Helios
sibling beyond helios-core.

Run:
    python tools/release/smoke/helios-data.py
"""

from __future__ import annotations

import io
import random
import sys

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from helios.data import ResumableDataLoader, ResumableSampler


class Noisy(Dataset[torch.Tensor]):
    """Each sample is its index plus torch and Python random noise."""

    def __len__(self) -> int:
        """Fifty samples."""
        return 50

    def __getitem__(self, index: int) -> torch.Tensor:
        """The index and random noise."""
        return torch.tensor([float(index), random.random()]) + torch.rand(2)


def saved(state: dict[str, object]) -> dict[str, object]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, object] = torch.load(buffer, weights_only=True)
    return loaded


def raw_loop() -> None:
    data = TensorDataset(torch.arange(103))
    straight = ResumableSampler(data, shuffle=True, seed=5)
    straight.set_epoch(2)
    expected = torch.cat([x for (x,) in DataLoader(data, batch_size=8, sampler=straight)])
    assert sorted(expected.tolist()) == list(range(103)), "the epoch is not a permutation"

    sampler = ResumableSampler(data, shuffle=True, seed=5)
    sampler.set_epoch(2)
    seen = []
    for step, (x,) in enumerate(DataLoader(data, batch_size=8, sampler=sampler)):
        seen.append(x)
        if step == 6:
            state = saved(sampler.state_dict())
            break
    assert state["consumed"] == 56, state

    resumed = ResumableSampler(data, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the current epoch: keeps the position
    seen += [x for (x,) in DataLoader(data, batch_size=8, sampler=resumed)]
    assert torch.equal(torch.cat(seen), expected), "resumed order differs from the straight one"


def helios_loader() -> None:
    def loader() -> ResumableDataLoader[torch.Tensor]:
        sampler = ResumableSampler(50, shuffle=True, seed=9)
        return ResumableDataLoader(Noisy(), sampler, batch_size=4, num_workers=2)

    rng_before = torch.get_rng_state()
    expected = list(loader())
    batches = []
    first = loader()
    for batch in first:
        batches.append(batch)
        if len(batches) == 5:
            break
    state = saved(first.state_dict())
    second = loader()
    second.load_state_dict(state)
    assert len(second) == len(expected) - 5, (len(second), len(expected))
    batches += list(second)
    assert all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))
    assert torch.equal(torch.get_rng_state(), rng_before), "the loader drew from the global RNG"


if __name__ == "__main__":
    raw_loop()
    helios_loader()
    siblings = sorted(m for m in sys.modules if m.startswith("helios."))
    assert siblings, "helios.data was not imported"
    stray = [m for m in siblings if not m.startswith(("helios.core", "helios.data"))]
    assert not stray, f"helios.data imported other Helios packages: {stray}"
    print("helios-data smoke: stop/resume in a raw loop and with workers gives the same batches")
