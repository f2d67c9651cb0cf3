"""The seams of helios.core.protocols: documented, and split into parts that compose.

A protocol check by ``isinstance`` only sees that methods exist. Whether a user's own
implementation of each seam really drives a training run (fit, resume, test, twice in a row) is
checked in tests/trainer/test_contracts.py.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_context import FakeContext

from helios.core import (
    CheckpointInfo,
    CheckpointStore,
    Collectives,
    DataParallel,
    DataSource,
    DistributedContext,
    MetricLogger,
    Model,
    ProcessInfo,
    SizedIterable,
    Stateful,
    TrainingState,
)


def members(protocol: type) -> set[str]:
    """The public members of ``protocol`` and of the protocols it extends."""
    return {
        name
        for klass in protocol.__mro__
        if klass not in (object, type(protocol)) and getattr(klass, "_is_protocol", False)
        for name, value in vars(klass).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


PROTOCOLS = [
    Stateful,
    CheckpointStore,
    MetricLogger,
    ProcessInfo,
    Collectives,
    DataParallel,
    DistributedContext,
    DataSource,
]


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_every_member_is_documented(protocol: type) -> None:
    assert inspect.getdoc(protocol)
    for name in members(protocol):
        assert inspect.getdoc(getattr(protocol, name)), f"{protocol.__name__}.{name}"


def test_the_distributed_context_is_the_union_of_its_parts() -> None:
    parts = members(ProcessInfo) | members(Collectives) | members(DataParallel)
    assert members(DistributedContext) == parts | {"close"}
    assert not members(ProcessInfo) & members(Collectives)
    assert "all_reduce_sum" in members(Collectives)
    context = FakeContext()
    for protocol in (ProcessInfo, Collectives, DataParallel, DistributedContext):
        assert isinstance(context, protocol), protocol.__name__


class RankOnly:
    """Only the ProcessInfo part: enough for code that asks who writes, not a context."""

    rank = local_rank = node_rank = 0
    world_size = 1
    device = torch.device("cpu")
    is_distributed = False
    is_main_process = is_local_main_process = True


def test_one_part_alone_is_not_a_distributed_context() -> None:
    assert isinstance(RankOnly(), ProcessInfo)
    assert not isinstance(RankOnly(), Collectives)
    assert not isinstance(RankOnly(), DistributedContext)


def test_a_training_loader_must_be_sized() -> None:
    assert isinstance([1, 2], SizedIterable)
    assert isinstance(torch.utils.data.DataLoader(list(range(4)), batch_size=2), SizedIterable)
    assert not isinstance(iter([1, 2]), SizedIterable)
    assert not isinstance((x for x in [1, 2]), SizedIterable)
    hints = inspect.get_annotations(DataSource.train_dataloader, eval_str=True)
    assert hints["return"] == SizedIterable[Any] | None


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


def test_checkpoint_info_is_immutable() -> None:
    info = CheckpointInfo(path=Path("x.pt"), step=3, epoch=0, metrics={"loss": 1.0})
    with pytest.raises(AttributeError):
        info.step = 4  # type: ignore[misc]
