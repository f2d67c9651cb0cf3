"""The DataModule the trainer drives through the DataSource protocol (helios.data._datamodule)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helios_data_testing import Augmented
from state_checks import round_trip
from torch.utils.data import TensorDataset

from helios.core import ConfigurationError, DataSource, ResumeError, Stateful
from helios.data import DataLoaderParams, DataModule, ResumableSampler


def numbers(size: int) -> TensorDataset:
    return TensorDataset(torch.arange(size))


class Numbers(DataModule):
    def __init__(self, train: int = 50, valid: int = 10, batch: int = 4, workers: int = 0) -> None:
        super().__init__()
        self.sizes = (train, valid)
        self.batch = batch
        self.workers = workers
        self.prepared = 0

    def prepare_data(self) -> None:
        self.prepared += 1

    def setup(self) -> None:
        train, valid = self.sizes
        self.add_train(
            numbers(train),
            DataLoaderParams(batch_size=self.batch, shuffle=True, num_workers=self.workers),
        )
        self.add_valid(numbers(valid), DataLoaderParams(batch_size=3))


def ready(module: DataModule, *, rank: int = 0, world_size: int = 1, seed: int = 7) -> DataModule:
    module.prepare_data()
    module.setup()
    module.configure(rank=rank, world_size=world_size, seed=seed)
    return module


def labels(loader: Any) -> list[int]:
    return [int(i) for (x,) in loader for i in x]


def test_is_a_data_source_and_stateful() -> None:
    module = Numbers()
    assert isinstance(module, DataSource)
    assert isinstance(module, Stateful)


def test_setup_is_required_and_can_run_twice() -> None:
    class NoSetup(DataModule):
        pass

    with pytest.raises(TypeError, match="setup"):
        NoSetup()  # type: ignore[abstract]
    module = ready(Numbers())
    module.setup()  # fit then test: nothing is added twice
    assert module.valid_dataloader() is not None
    assert module.test_dataloader() is None
    assert len(labels(module.train_dataloader())) == 50


def test_a_subclass_extending_setup_keeps_both_parts() -> None:
    class WithTest(Numbers):
        def setup(self) -> None:
            super().setup()
            self.add_test(numbers(6), DataLoaderParams(batch_size=6))

    module = ready(WithTest())
    module.setup()
    assert labels(module.test_dataloader()) == list(range(6))
    assert labels(module.valid_dataloader()) == list(range(10))


def test_train_loader_follows_the_seed_and_epoch_and_continues_after_a_break() -> None:
    module = ready(Numbers(), seed=11)
    module.set_epoch(3)
    expected = ResumableSampler(50, shuffle=True, seed=11)
    expected.set_epoch(3)
    loader = module.train_dataloader()
    assert loader is not None
    assert len(loader) == 13
    head = []
    for (x,) in loader:
        head += x.tolist()
        if len(head) == 20:
            break
    assert module.state_dict()["consumed"] == 20
    again = module.train_dataloader()
    assert again is loader
    assert len(again) == 8
    assert head + labels(again) == list(expected)
    state = module.state_dict()
    assert (state["epoch"], state["consumed"]) == (3, 50)  # done: the trainer moves on
    module.set_epoch(4)
    assert (module.epoch, module.consumed, len(loader)) == (4, 0, 13)


def test_state_survives_weights_only_and_resumes_mid_epoch_in_a_fresh_module() -> None:
    module = ready(Numbers(workers=2))
    module.set_epoch(1)
    straight_module = ready(Numbers())
    straight_module.set_epoch(1)
    straight = labels(straight_module.train_dataloader())
    iterator = iter(module.train_dataloader())
    head = [int(i) for _ in range(5) for i in next(iterator)[0]]
    state = round_trip(module.state_dict())
    assert state == {
        "version": 1,
        "epoch": 1,
        "consumed": 20,
        "phase": 0,
        "phase_start_epoch": 0,
        "world_size": 1,
        "dataset_size": 50,
        "batch_size": 4,
    }
    fresh = Numbers(workers=2)
    fresh.setup()
    fresh.configure(rank=0, world_size=1, seed=7)
    fresh.load_state_dict(state)
    fresh.set_epoch(1)  # the trainer's call at the start of the resumed epoch: a no-op
    assert head + labels(fresh.train_dataloader()) == straight


def test_elastic_resume_through_the_module() -> None:
    """Two ranks stop mid-epoch; three resume; each unseen sample exactly once."""
    ranks = [ready(Numbers(train=60), rank=r, world_size=2) for r in range(2)]
    seen = []
    for module in ranks:
        iterator = iter(module.train_dataloader())
        seen += [int(i) for _ in range(3) for i in next(iterator)[0]]
    state = ranks[0].state_dict()
    assert state == ranks[1].state_dict()
    rest = []
    for rank in range(3):
        module = Numbers(train=60)
        module.setup()
        module.configure(rank=rank, world_size=3, seed=7)
        module.load_state_dict(state)
        rest += labels(module.train_dataloader())
    assert sorted(seen + rest) == list(range(60))


def test_validation_is_sharded_without_padding() -> None:
    shards = [
        labels(ready(Numbers(valid=10), rank=r, world_size=4).valid_dataloader()) for r in range(4)
    ]
    assert shards == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]


def test_validation_is_the_same_every_time_and_seeded_per_sample() -> None:
    class Augmenting(DataModule):
        def setup(self) -> None:
            self.add_valid(Augmented(12), DataLoaderParams(batch_size=5, num_workers=2))

    module = ready(Augmenting())
    first = [x for x, _ in module.valid_dataloader()]
    second = [x for x, _ in module.valid_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert module.train_dataloader() is None


class Curriculum(DataModule):
    def setup(self) -> None:
        self.add_train(numbers(8), DataLoaderParams(batch_size=4), epochs=2, name="easy")
        self.add_train(numbers(12), DataLoaderParams(batch_size=4), name="hard")


def test_phases_follow_their_epochs_and_are_checkpointed() -> None:
    module = ready(Curriculum())
    sizes = []
    for epoch in range(4):
        module.set_epoch(epoch)
        sizes.append(len(labels(module.train_dataloader())))
    assert sizes == [8, 8, 12, 12]
    assert module.state_dict()["phase"] == 1
    fresh = ready(Curriculum())
    fresh.load_state_dict(round_trip(module.state_dict()))
    assert fresh.phase == 1
    assert len(fresh.train_dataloader()) == 0  # epoch 3 was finished


def test_set_phase_switches_by_hand_and_the_index_is_restored() -> None:
    module = ready(Curriculum())
    module.set_phase(1)
    loader = module.train_dataloader()
    assert len(loader) == 3
    next(iter(loader))
    state = round_trip(module.state_dict())
    assert (state["phase"], state["consumed"], state["dataset_size"]) == (1, 4, 12)
    fresh = ready(Curriculum())
    fresh.load_state_dict(state)
    assert len(fresh.train_dataloader()) == 2
    with pytest.raises(ConfigurationError, match="phase"):
        module.set_phase(2)


def test_a_state_for_other_data_is_refused() -> None:
    module = ready(Numbers(train=50))
    state = module.state_dict()
    with pytest.raises(ResumeError, match="50 samples"):
        ready(Numbers(train=49)).load_state_dict(state)
    with pytest.raises(ResumeError, match="phase 3"):
        ready(Numbers()).load_state_dict(state | {"phase": 3})
    with pytest.raises(ResumeError, match="missing"):
        ready(Numbers()).load_state_dict({"epoch": 1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rank": 2, "world_size": 2, "seed": 0}, "rank"),
        ({"rank": 0, "world_size": 0, "seed": 0}, "world_size"),
        ({"rank": 0, "world_size": 1, "seed": -3}, "seed"),
    ],
)
def test_configure_checks_its_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Numbers().configure(**kwargs)


def test_add_valid_twice_and_bad_params_are_refused() -> None:
    class Twice(DataModule):
        def setup(self) -> None:
            self.add_valid(numbers(3))
            self.add_valid(numbers(3))

    with pytest.raises(ConfigurationError, match="add_valid"):
        Twice().setup()

    class Loose(DataModule):
        def setup(self) -> None:
            self.add_train(numbers(3), {"batch_size": 2})  # type: ignore[arg-type]

    with pytest.raises(ConfigurationError, match="DataLoaderParams"):
        Loose().setup()


def test_a_state_loaded_before_setup_is_checked_when_the_loader_is_built() -> None:
    state = ready(Numbers(train=50)).state_dict()
    early = Numbers(train=49)
    early.load_state_dict(state)  # the trainer may restore before setup
    early.setup()
    with pytest.raises(ResumeError, match="50 samples"):
        early.train_dataloader()
    fine = Numbers(train=50)
    fine.load_state_dict(state | {"consumed": 12})
    fine.setup()
    assert len(fine.train_dataloader()) == 10


def test_forgetting_super_init_is_a_clear_error() -> None:
    class Forgetful(DataModule):
        def __init__(self) -> None:
            pass

        def setup(self) -> None:
            self.add_train(numbers(3))

    with pytest.raises(ConfigurationError, match=r"super\(\).__init__\(\)"):
        Forgetful().setup()


def test_replace_train_params_changes_workers_not_the_batches() -> None:
    plain = ready(Numbers())
    changed = ready(Numbers())
    changed.replace_train_params(num_workers=2)
    loader = changed.train_dataloader()
    assert loader is not None and loader.num_workers == 2
    assert labels(loader) == labels(plain.train_dataloader())
    with pytest.raises(ConfigurationError, match=r"unknown DataLoaderParams fields \['workers'\]"):
        changed.replace_train_params(workers=2)
    with pytest.raises(ConfigurationError, match="num_workers"):
        changed.replace_train_params(num_workers=-1)


def test_the_module_and_its_training_sampler_share_one_position() -> None:
    module = ready(Numbers())
    loader = module.train_dataloader()
    assert loader is not None
    assert loader.sampler.position is module.position
    iterator = iter(loader)
    next(iterator)
    next(iterator)
    assert (module.epoch, module.consumed) == (0, 8) == (loader.sampler.epoch, 8)
    module.set_epoch(1)
    assert (loader.sampler.epoch, loader.sampler.consumed, len(loader)) == (1, 0, 13)


def test_a_dropped_training_loader_no_longer_moves_the_position() -> None:
    module = ready(Numbers())
    loader = module.train_dataloader()
    assert loader is not None
    old = iter(loader)
    next(old)
    module.configure(rank=0, world_size=1, seed=8)  # the loaders are rebuilt on request
    next(old)
    next(old)
    assert (module.consumed, loader.sampler.consumed) == (4, 12)
    fresh = module.train_dataloader()
    assert fresh is not None and fresh is not loader
    assert fresh.sampler.position is module.position
    assert len(fresh) == 12  # 46 samples left
