"""Conformance of the seams (helios.core.protocols).

Each protocol is checked both ways: an object with every method is an instance, and one that
lacks a method is not. The implementations in the sibling packages assert ``isinstance`` in their
own tests.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from helios.core import (
    CheckpointInfo,
    CheckpointStore,
    DataSource,
    DistributedContext,
    MetricLogger,
    Model,
    Stateful,
    TrainingState,
)


def members(protocol: type) -> set[str]:
    return {
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def implementation_of(protocol: type, *, leave_out: str | None = None) -> object:
    """A class that has every member of ``protocol`` (but ``leave_out``), with dummy bodies."""
    namespace: dict[str, Any] = {}
    for name in members(protocol) - {leave_out}:
        if isinstance(vars(protocol)[name], property):
            namespace[name] = property(lambda self: 0)
        else:
            namespace[name] = lambda self, *args, **kwargs: None
    return type(f"Fake{protocol.__name__}", (), namespace)()


PROTOCOLS = [Stateful, CheckpointStore, MetricLogger, DistributedContext, DataSource]


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_an_object_with_every_member_conforms(protocol: type) -> None:
    assert isinstance(implementation_of(protocol), protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_an_object_missing_any_member_does_not_conform(protocol: type) -> None:
    for name in members(protocol):
        assert not isinstance(implementation_of(protocol, leave_out=name), protocol), name


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_every_member_is_documented(protocol: type) -> None:
    assert inspect.getdoc(protocol)
    for name in members(protocol):
        assert inspect.getdoc(getattr(protocol, name)), f"{protocol.__name__}.{name}"


def test_pytorch_objects_and_helios_state_are_stateful() -> None:
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    assert isinstance(net, Stateful)
    assert isinstance(optimizer, Stateful)
    assert isinstance(torch.optim.lr_scheduler.StepLR(optimizer, 1), Stateful)
    assert isinstance(TrainingState(), Stateful)

    class Tiny(Model):
        def setup(self) -> None:
            pass

        def train_step(self, batch: Any, state: TrainingState) -> None:
            return None

    assert isinstance(Tiny(), Stateful)
    assert not isinstance(object(), Stateful)


class SingleProcess:
    """A hand-written DistributedContext for one process: what a user may pass instead."""

    rank = local_rank = node_rank = 0
    world_size = 1
    device = torch.device("cpu")
    is_distributed = False
    is_main_process = is_local_main_process = True

    def barrier(self) -> None:
        pass

    def all_reduce_mean(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {key: float(value) for key, value in metrics.items()}

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return obj

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def agree(self, flag: bool, mode: str = "any") -> bool:
        return flag

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def no_sync(self, module: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


def test_a_user_object_with_plain_attributes_conforms() -> None:
    assert isinstance(SingleProcess(), DistributedContext)


class ListSource:
    """A DataSource over plain lists: the protocol does not require a DataModule."""

    def __init__(self) -> None:
        self.epoch = 0

    def prepare_data(self) -> None:
        pass

    def setup(self) -> None:
        pass

    def configure(self, *, rank: int, world_size: int, seed: int) -> None:
        pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def train_dataloader(self) -> Iterator[int]:
        return iter(range(3))

    def valid_dataloader(self) -> None:
        return None

    def test_dataloader(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = state_dict["epoch"]


def test_a_plain_data_source_conforms() -> None:
    assert isinstance(ListSource(), DataSource)


def test_checkpoint_info_is_immutable() -> None:
    info = CheckpointInfo(path=Path("x.pt"), step=3, epoch=0, metrics={"loss": 1.0})
    with pytest.raises(AttributeError):
        info.step = 4  # type: ignore[misc]
