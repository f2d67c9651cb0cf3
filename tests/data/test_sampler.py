"""The resumable, elastic sampler (helios.data._sampler)."""

from __future__ import annotations

import random
import tracemalloc
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from state_checks import round_trip
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from helios.core import ConfigurationError, ResumeError, Stateful
from helios.data import ResumableSampler, SamplePosition


def epoch_of(size: int, epoch: int, **kwargs: Any) -> list[int]:
    sampler = ResumableSampler(size, **kwargs)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_is_stateful_and_a_torch_sampler() -> None:
    sampler = ResumableSampler(10)
    assert isinstance(sampler, Stateful)
    assert isinstance(sampler, torch.utils.data.Sampler)


@pytest.mark.parametrize("size", [1, 2, 10, 1000, 65_537])
def test_random_epoch_is_a_permutation(size: int) -> None:
    order = epoch_of(size, 3, seed=4)
    assert sorted(order) == list(range(size))


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    first = epoch_of(500, 2, seed=9)
    torch.manual_seed(123)  # the global RNG plays no part
    assert epoch_of(500, 2, seed=9) == first
    assert epoch_of(500, 3, seed=9) != first
    assert epoch_of(500, 2, seed=10) != first
    assert epoch_of(500, 0, shuffle=False) == list(range(500))
    after = (random.getstate(), np.random.get_state()[1], torch.get_rng_state())
    assert before[0] == after[0]
    assert np.array_equal(before[1], after[1])
    assert not torch.equal(before[2], after[2])  # only because this test reseeded torch


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("size", "replicas"), [(10, 3), (12, 3), (7, 4), (2, 3), (100, 1)])
def test_sequential_shards_match_torch_distributed_sampler(
    size: int, replicas: int, drop_last: bool
) -> None:
    for rank in range(replicas):
        ours = ResumableSampler(
            size, shuffle=False, num_replicas=replicas, rank=rank, drop_last=drop_last
        )
        theirs = DistributedSampler(
            range(size), num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last
        )
        assert list(ours) == list(theirs)
        assert len(
            ResumableSampler(size, num_replicas=replicas, rank=rank, drop_last=drop_last)
        ) == len(theirs)


def test_stop_and_resume_gives_the_rest_of_the_epoch() -> None:
    straight = epoch_of(1000, 1, seed=2)
    sampler = ResumableSampler(1000, seed=2)
    sampler.set_epoch(1)
    head = []
    for index in sampler:
        head.append(index)
        if len(head) == 337:
            break
    state = round_trip(sampler.state_dict())
    assert state["consumed"] == 337
    assert state["epoch"] == 1
    resumed = ResumableSampler(1000, seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # current epoch: keeps the position
    assert len(resumed) == 663
    assert head + list(resumed) == straight
    assert resumed.consumed == 1000
    assert len(resumed) == 0


def test_iterating_again_after_a_break_continues() -> None:
    sampler = ResumableSampler(100, seed=1)
    head = []
    for index in sampler:
        head.append(index)
        if len(head) == 30:
            break
    assert sampler.consumed == 30
    assert head + list(sampler) == epoch_of(100, 0, seed=1)


def test_a_plain_dataloader_without_workers_counts_delivered_batches() -> None:
    data = TensorDataset(torch.arange(50))
    sampler = ResumableSampler(data, seed=3)
    for step, _ in enumerate(DataLoader(data, batch_size=8, sampler=sampler)):
        assert sampler.consumed == min(8 * (step + 1), 50)


def test_set_epoch_keeps_the_current_epoch_and_resets_another() -> None:
    sampler = ResumableSampler(20, seed=0)
    sampler.set_position(4, 12)
    sampler.set_epoch(4)
    assert (sampler.epoch, sampler.consumed, len(sampler)) == (4, 12, 8)
    sampler.set_epoch(5)
    assert (sampler.epoch, sampler.consumed, len(sampler)) == (5, 0, 20)


def test_a_finished_epoch_warns_and_yields_nothing() -> None:
    sampler = ResumableSampler(5)
    assert len(list(sampler)) == 5
    with pytest.warns(RuntimeWarning, match=r"set_epoch\(1\)"):
        assert list(sampler) == []


def interleave(ranks: list[list[int]]) -> list[int]:
    """What the ranks took, in global order (rank r's j-th sample is position j * W + r)."""
    return [index for step in zip(*ranks, strict=True) for index in step]


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 1), (1, 4), (4, 2)])
def test_elastic_resume_delivers_every_unseen_sample_once(before: int, after: int) -> None:
    size, epoch, seed = 120, 2, 8
    ranks = [ResumableSampler(size, seed=seed, num_replicas=before, rank=r) for r in range(before)]
    taken = []
    for sampler in ranks:
        sampler.set_epoch(epoch)
        taken.append([i for _, i in zip(range(12), sampler, strict=False)])
    states = [round_trip(s.state_dict()) for s in ranks]
    assert all(state == states[0] for state in states)  # every rank saves the same state
    seen = interleave(taken)
    seen = seen[: states[0]["consumed"]]
    resumed = []
    for rank in range(after):
        sampler = ResumableSampler(size, seed=seed, num_replicas=after, rank=rank)
        sampler.load_state_dict(states[0])
        sampler.set_epoch(epoch)
        resumed.append(list(sampler))
    rest = [i for r in resumed for i in r]
    unseen = set(range(size)) - set(seen)
    assert Counter(rest) == Counter(unseen)  # 120 - 12 * before divides by after: no padding
    assert len({len(r) for r in resumed}) == 1  # every rank gets as many


def test_elastic_resume_pads_only_with_samples_already_seen() -> None:
    size = 61
    ranks = [ResumableSampler(size, seed=1, num_replicas=2, rank=r) for r in range(2)]
    taken = [[i for _, i in zip(range(12), s, strict=False)] for s in ranks]
    state = ranks[0].state_dict()
    seen = set(interleave([t[:12] for t in taken])[: state["consumed"]])
    resumed = []
    for rank in range(3):
        sampler = ResumableSampler(size, seed=1, num_replicas=3, rank=rank)
        sampler.load_state_dict(state)
        resumed.append(list(sampler))
    rest = Counter(i for r in resumed for i in r)
    unseen = set(range(size)) - seen
    assert all(rest[i] == 1 for i in unseen)
    padding = rest - Counter(unseen)
    assert sum(padding.values()) == 3 * len(resumed[0]) - len(unseen)
    assert set(padding) <= seen
    assert len({len(r) for r in resumed}) == 1


def test_drop_last_drops_the_tail_and_reports_the_epoch_done() -> None:
    ranks = [ResumableSampler(11, seed=2, num_replicas=3, rank=r, drop_last=True) for r in range(3)]
    shards = [list(s) for s in ranks]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert len(set().union(*shards)) == 9
    assert all(s.consumed == 11 for s in ranks)


def test_without_padding_every_sample_is_read_once() -> None:
    shards = [
        list(ResumableSampler(10, shuffle=False, num_replicas=4, rank=r, padding=False))
        for r in range(4)
    ]
    assert [len(s) for s in shards] == [3, 3, 2, 2]
    assert sorted(i for s in shards for i in s) == list(range(10))


def test_a_billion_samples_resume_in_o1_with_bounded_memory() -> None:
    size = 10**9
    sampler = ResumableSampler(size, seed=3)
    sampler.set_position(0, size - 1000)  # 99.9999 % into the epoch
    tracemalloc.start()
    try:
        tail = list(sampler)
        head_sampler = ResumableSampler(size, seed=3)
        head = [i for _, i in zip(range(100_000), head_sampler, strict=False)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(tail) == 1000
    assert len(set(tail) | set(head)) == 101_000
    assert all(0 <= i < size for i in tail + head)
    assert peak < 30 * 2**20  # a chunk at a time, not 8 GB of indices


def test_state_round_trips_through_weights_only_load() -> None:
    sampler = ResumableSampler(100, seed=2**63 + 5, num_replicas=2, rank=1)
    sampler.set_position(3, 40)
    state = round_trip(sampler.state_dict())
    assert state == {
        "version": 1,
        "epoch": 3,
        "consumed": 40,
        "dataset_size": 100,
        "shuffle": True,
        "seed": 2**63 + 5,
    }


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"dataset_size": 99}, "dataset_size=99"),
        ({"seed": 6}, "seed=6"),
        ({"shuffle": False}, "shuffle=False"),
        ({"version": 7}, "version 7"),
        ({"consumed": 101}, "consumed"),
        ({"epoch": -1}, "epoch"),
    ],
)
def test_a_state_that_does_not_fit_is_refused(change: dict[str, Any], match: str) -> None:
    state = ResumableSampler(100, seed=5).state_dict() | change
    with pytest.raises(ResumeError, match=match):
        ResumableSampler(100, seed=5).load_state_dict(state)


def test_a_state_with_missing_keys_is_refused() -> None:
    with pytest.raises(ResumeError, match="missing"):
        ResumableSampler(10).load_state_dict({"epoch": 0})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_replicas": 0}, "num_replicas"),
        ({"num_replicas": 2, "rank": 2}, "rank"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"shuffle": 1}, "shuffle"),
    ],
)
def test_bad_arguments_are_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ResumableSampler(10, **kwargs)


def test_set_position_checks_its_arguments() -> None:
    with pytest.raises(ConfigurationError, match="consumed"):
        ResumableSampler(10).set_position(0, 11)
    with pytest.raises(ConfigurationError, match="epoch"):
        ResumableSampler(10).set_epoch(-2)


def test_samplers_sharing_a_position_continue_each_other() -> None:
    position = SamplePosition()
    first = ResumableSampler(10, shuffle=True, seed=1)
    first.use_position(position)
    head = [i for _, i in zip(range(3), first, strict=False)]
    assert position.consumed == 3
    second = ResumableSampler(10, shuffle=True, seed=1)
    second.use_position(position)  # first's iteration stops counting here
    assert sorted(head + list(second)) == list(range(10))
    assert position.consumed == first.consumed == 10


def test_a_shared_position_past_the_end_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"consumed must be in \[0, 10\], got 20"):
        ResumableSampler(10).use_position(SamplePosition(0, 20))
