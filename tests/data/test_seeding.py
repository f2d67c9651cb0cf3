"""Seeded batches (helios.data._seeding): randomness in ``__getitem__`` and ``collate_fn``.

Every RNG a data pipeline draws from — Python's ``random``, NumPy's legacy global RNG, Helios'
NumPy generator and torch's CPU generator — must give the same numbers whatever the number of
workers and wherever the run resumed, and loading in the main process must leave the training
loop's RNGs exactly as they were.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from state_checks import assert_nested_equal
from torch.utils.data import Dataset, TensorDataset, default_collate

from helios.core import numpy_generator, seed_everything
from helios.data import ResumableDataLoader, ResumableSampler, SeededDataset, _seeding, seed_batch

SIZE, BATCH, SEED, EPOCH = 30, 4, 5, 2


class EveryRng(Dataset[torch.Tensor]):
    """Sample ``i``: ``[i, random, np.random, numpy_generator(), torch]`` draws."""

    def __len__(self) -> int:
        return SIZE

    def __getitem__(self, index: int) -> torch.Tensor:
        drawn = [
            float(index),
            random.random(),
            float(np.random.rand()),
            float(numpy_generator().random()),
            float(np.random.normal()),  # the legacy Gaussian, whose second value is cached
        ]
        return torch.cat([torch.tensor(drawn, dtype=torch.float64), torch.rand(1).double()])


def random_collate(samples: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """A collate function with randomness of its own: a random mask and a random mix-up pair."""
    batch = default_collate(samples)
    mask = torch.rand(batch.shape[0]) < 0.5
    extra = torch.tensor(
        [random.random(), float(np.random.rand()), float(numpy_generator().random())],
        dtype=torch.float64,
    )
    return {"x": batch, "mask": mask, "extra": extra}


def loader(workers: int, **kwargs: Any) -> ResumableDataLoader[Any]:
    sampler = ResumableSampler(SIZE, shuffle=True, seed=SEED)
    sampler.set_epoch(EPOCH)
    return ResumableDataLoader(
        EveryRng(),
        sampler,
        batch_size=BATCH,
        num_workers=workers,
        collate_fn=random_collate,
        **kwargs,
    )


@pytest.fixture(scope="module")
def straight() -> list[dict[str, torch.Tensor]]:
    return list(loader(0))


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_zero_and_three_workers_draw_the_same_numbers_in_getitem_and_collate(
    straight: list[dict[str, torch.Tensor]],
) -> None:
    assert_nested_equal(list(loader(3)), straight)
    draws = torch.cat([batch["x"][:, 1:] for batch in straight])
    assert draws.unique().numel() == draws.numel()  # every sample drew numbers of its own
    extras = torch.stack([batch["extra"] for batch in straight])
    assert extras.unique().numel() == extras.numel()  # and so did every collate call


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stop", [1, 4])
def test_a_resumed_loader_draws_what_the_straight_one_drew(
    workers: int, stop: int, straight: list[dict[str, torch.Tensor]]
) -> None:
    first = loader(workers)
    head = []
    for batch in first:
        head.append(batch)
        if len(head) == stop:
            break
    state = first.state_dict()
    # What ran in between must not matter: other draws, another seed.
    seed_everything(1234)
    np.random.normal()
    resumed = loader(workers)
    resumed.load_state_dict(state)
    resumed.set_epoch(EPOCH)
    assert_nested_equal(head + list(resumed), straight)


def global_states() -> tuple[Any, ...]:
    return (
        random.getstate(),
        np.random.get_state(legacy=False),
        numpy_generator().bit_generator.state,
        torch.get_rng_state(),
    )


def test_loading_in_the_main_process_leaves_every_global_rng_as_it_was() -> None:
    seed_everything(3)
    random.random(), np.random.rand(3), numpy_generator().random(), torch.rand(2)
    before = global_states()
    batches = list(loader(0))
    assert len(batches) == -(-SIZE // BATCH)
    assert_nested_equal(global_states(), before)


def test_the_legacy_numpy_state_is_copied_without_numpy_s_slow_path() -> None:
    # The import-time self-check passed on this NumPy, so the 2.5 kB copy is in use (the slow
    # public API would cost ~100 us a batch); the state test above proves the copy is exact.
    assert _seeding._LEGACY_ADDRESS is not None


def test_seed_batch_gives_the_same_streams_for_a_seed_and_new_ones_for_another() -> None:
    def draws(seed: int) -> list[float]:
        seed_batch(seed)
        return [
            random.random(),
            float(np.random.rand()),
            float(numpy_generator().random()),
            float(torch.rand(1)),
        ]

    assert draws(2**63 + 11) == draws(2**63 + 11)
    # NumPy's legacy RNG takes a 32-bit seed: the upper half of the (well mixed) batch seed.
    one, other = draws(0x9E3779B97F4A7C15), draws(0xBF58476D1CE4E5B9)
    assert all(a != b for a, b in zip(one, other, strict=True))


def test_a_batch_s_seed_is_the_seed_of_its_first_sample_s_global_position() -> None:
    sampler = ResumableSampler(SIZE, shuffle=True, seed=SEED, num_replicas=2, rank=1)
    sampler.set_epoch(EPOCH)
    sampler.set_position(EPOCH, 6)
    seen: list[tuple[int, list[int]]] = []

    class Recording(TensorDataset):
        def __getitems__(self, indices: list[int]) -> list[Any]:
            seen.append((torch.initial_seed(), list(indices)))
            return [self[i] for i in indices]

    data = Recording(torch.arange(SIZE))
    batches = list(ResumableDataLoader(data, sampler, batch_size=BATCH))
    # rank 1 of 2 from global position 6: positions 7, 9, 11, ...; batches start at 7, 15, 23
    firsts = np.array([7 + 2 * BATCH * b for b in range(len(batches))])
    expected = sampler.sample_seeds(EPOCH, firsts).tolist()
    assert [seed for seed, _ in seen] == expected
    # The user's own __getitems__ (batched fetching) is called with the batch's indices.
    assert [indices for _, indices in seen] == [batch[0].tolist() for batch in batches]


def test_seeded_dataset_builds_one_collated_batch_per_key() -> None:
    dataset = SeededDataset(TensorDataset(torch.arange(10.0)))
    (batch,) = dataset.__getitems__((99, [3, 1, 4]))
    assert torch.equal(batch[0], torch.tensor([3.0, 1.0, 4.0]))
    assert len(dataset) == 10


def test_torch_s_pure_datasets_with_torch_s_collate_are_not_seeded() -> None:
    from torch.utils.data import ConcatDataset, StackDataset, Subset

    from helios.data import DataLoaderParams
    from helios.data._loader import _needs_seeding

    pure = TensorDataset(torch.arange(8.0))
    default = DataLoaderParams()
    assert not _needs_seeding(pure, default)
    assert not _needs_seeding(Subset(ConcatDataset([pure, pure]), [1, 2]), default)
    assert not _needs_seeding(StackDataset(a=pure, b=Subset(pure, range(8))), default)
    assert not _needs_seeding(pure, DataLoaderParams(collate_fn="default_convert"))

    class Noisy(TensorDataset):  # a subclass may draw: seeded
        pass

    assert _needs_seeding(Noisy(torch.arange(8.0)), default)
    assert _needs_seeding(ConcatDataset([pure, EveryRng()]), default)
    assert _needs_seeding(pure, DataLoaderParams(collate_fn=random_collate))
    assert _needs_seeding(pure, DataLoaderParams(seed_batches=True))
    assert not _needs_seeding(EveryRng(), DataLoaderParams(seed_batches=False))


def test_seed_batches_false_really_seeds_and_saves_nothing() -> None:
    # The user's word is taken: the dataset's draws then come from the main process's RNGs,
    # which move on (nothing is seeded, saved or put back).
    sampler = ResumableSampler(SIZE, shuffle=False)
    unseeded = ResumableDataLoader(EveryRng(), sampler, batch_size=BATCH, seed_batches=False)
    seed_everything(3)
    before = torch.get_rng_state()
    first = torch.cat(list(unseeded))
    assert not torch.equal(torch.get_rng_state(), before)
    seed_everything(3)
    sampler.set_epoch(1)
    sampler.set_epoch(0)
    assert torch.equal(torch.cat(list(unseeded)), first)  # the global stream, from seed 3


def test_seed_batches_must_be_a_bool_or_none() -> None:
    from helios.core import ConfigurationError
    from helios.data import DataLoaderParams

    with pytest.raises(ConfigurationError, match=r"seed_batches must be True, False or None"):
        DataLoaderParams(seed_batches="no")  # type: ignore[arg-type]
