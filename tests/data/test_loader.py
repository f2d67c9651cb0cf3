"""The loader that counts delivered batches and seeds every sample (helios.data._loader).

The resume tests follow the issue: one epoch straight vs. stopped after k batches (first, middle,
last but one), state saved, a fresh loader *in a new process* resumed; the concatenated batches
must be ``torch.equal`` to the straight epoch, with random augmentation from torch, NumPy and
``random`` in ``__getitem__``.
"""

from __future__ import annotations

import inspect
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helios_data_testing import BATCH, EPOCH, SEED, SIZE, Augmented, make_loader
from state_checks import assert_nested_equal
from torch.utils.data import TensorDataset, default_collate

import helios.data._loader
from helios.core import ConfigurationError, Stateful
from helios.data import ResumableDataLoader, ResumableSampler

CHILD = Path(__file__).with_name("helios_data_testing.py")
BATCHES = -(-SIZE // BATCH)


def test_is_stateful() -> None:
    assert isinstance(make_loader(0), Stateful)


@pytest.fixture(scope="module")
def straight() -> list[Any]:
    return list(make_loader(0))


def test_straight_epoch_is_collated_by_default_collate_and_augmented(straight: list[Any]) -> None:
    assert len(straight) == BATCHES
    order = ResumableSampler(SIZE, shuffle=True, seed=SEED)
    order.set_epoch(EPOCH)
    labels = torch.cat([y for _, y in straight])
    assert labels.tolist() == list(order)
    first = default_collate([Augmented()[i] for i in labels[:BATCH].tolist()])
    assert torch.equal(first[1], straight[0][1])
    assert straight[0][0].dtype == torch.float64
    noise = torch.cat([x[:, 1:] for x, _ in straight])
    assert noise.unique().numel() == noise.numel()  # every sample got its own random values


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_three_workers_give_the_same_batches_as_none(straight: list[Any]) -> None:
    assert_nested_equal(list(make_loader(3)), straight)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stop_save_and_resume_in_a_new_process_is_exact(
    num_workers: int, straight: list[Any], tmp_path: Path
) -> None:
    stops = [1, BATCHES // 2, BATCHES - 1]
    heads = []
    states = []
    for k in stops:
        loader = make_loader(num_workers, prefetch_factor=3) if num_workers else make_loader(0)
        head = []
        for batch in loader:
            head.append(batch)
            if len(head) == k:
                break
        assert loader.state_dict()["consumed"] == k * BATCH  # delivered, not prefetched
        path = tmp_path / f"state-{k}.pt"
        torch.save(loader.state_dict(), path)
        heads.append(head)
        states.append(str(path))
    out = tmp_path / "rest.pt"
    subprocess.run(
        [sys.executable, str(CHILD), str(num_workers), str(out), *states],
        check=True,
        timeout=240,
    )
    rests = torch.load(out, weights_only=True)
    for k, head, rest in zip(stops, heads, rests, strict=True):
        assert len(rest) == BATCHES - k
        assert_nested_equal(head + rest, straight)


def test_len_is_the_batches_left_and_a_second_iteration_continues(straight: list[Any]) -> None:
    loader = make_loader(2, persistent_workers=True)
    assert len(loader) == BATCHES
    head = []
    for batch in loader:
        head.append(batch)
        if len(head) == 4:
            break
    assert len(loader) == BATCHES - 4
    assert_nested_equal(head + list(loader), straight)
    assert len(loader) == 0
    assert loader.state_dict()["consumed"] == SIZE


def test_persistent_workers_resume_and_carry_on_across_epochs(straight: list[Any]) -> None:
    reference = make_loader(0)
    reference.set_epoch(EPOCH + 1)
    next_epoch = list(reference)
    loader = make_loader(2, persistent_workers=True)
    head = [batch for _, batch in zip(range(3), loader, strict=False)]
    state = loader.state_dict()
    resumed = make_loader(2, persistent_workers=True)
    resumed.load_state_dict(state)
    assert_nested_equal(head + list(resumed), straight)
    resumed.set_epoch(EPOCH + 1)
    assert_nested_equal(list(resumed), next_epoch)


def test_creating_and_iterating_leaves_the_global_rngs_alone() -> None:
    for num_workers in (0, 2):
        torch.manual_seed(0)
        random.seed(0)
        np.random.seed(0)
        before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
        loader = make_loader(num_workers)
        iterator = iter(loader)
        next(iterator)
        list(iterator)
        assert torch.equal(torch.get_rng_state(), before[0])
        assert random.getstate() == before[1]
        assert np.array_equal(np.random.get_state()[1], before[2])


def test_distributed_loaders_resume_at_another_world_size() -> None:
    """World size 2 stopped after 3 batches per rank, resumed at 3: each unseen sample once."""
    size, batch = 60, 4
    data = TensorDataset(torch.arange(size))

    def loaders(world: int) -> list[ResumableDataLoader[Any]]:
        samplers = [
            ResumableSampler(size, seed=4, num_replicas=world, rank=r) for r in range(world)
        ]
        return [ResumableDataLoader(data, s, batch_size=batch) for s in samplers]

    first = loaders(2)
    iterators = [iter(loader) for loader in first]
    seen = [int(i) for _ in range(3) for it in iterators for i in next(it)[0]]
    states = [loader.state_dict() for loader in first]
    assert states[0] == states[1]
    assert states[0]["consumed"] == 3 * batch * 2
    second = loaders(3)
    rest = []
    for loader in second:
        loader.load_state_dict(states[0])
        assert len(loader) == 3  # 36 samples left: 12 per rank
        rest += [int(i) for (x,) in loader for i in x]
    assert sorted(seen + rest) == list(range(size))


def test_the_short_last_batch_and_drop_last_are_counted_exactly() -> None:
    data = TensorDataset(torch.arange(10))
    loader = ResumableDataLoader(data, ResumableSampler(10, seed=1), batch_size=4)
    consumed = [loader.state_dict()["consumed"] for _ in loader]
    assert consumed == [4, 8, 10]
    dropping = ResumableDataLoader(data, ResumableSampler(10, seed=1), batch_size=4, drop_last=True)
    assert len(dropping) == 2
    consumed = [dropping.state_dict()["consumed"] for _ in dropping]
    assert consumed == [4, 10]  # the epoch is done: the dropped tail is not left pending


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"prefetch_factor": 2}, "prefetch_factor"),
        ({"persistent_workers": True}, "persistent_workers"),
        ({"collate_fn": "no_such_collate"}, "no_such_collate"),
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ResumableDataLoader(Augmented(), ResumableSampler(SIZE), **kwargs)


def test_a_dataset_of_another_length_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="41"):
        ResumableDataLoader(Augmented(41), ResumableSampler(SIZE))


def test_the_loader_drives_the_sampler_through_its_public_methods_only() -> None:
    source = inspect.getsource(helios.data._loader)
    assert "sampler." in source
    assert not re.findall(r"sampler\._\w+", source)
