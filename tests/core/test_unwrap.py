"""``helios.core.unwrap``: one function sees through DDP and leaves FSDP2 be.

Its torch.compile cases are in tests/trainer/test_compile.py, the module that pays for
importing dynamo anyway.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from helios.core import unwrap
from helios.dist import free_port

PLAIN_KEYS = ["0.weight", "0.bias", "1.weight", "1.bias"]


def network() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))


@pytest.fixture
def group_of_one() -> Iterator[None]:
    """A real one-process Gloo group, as DDP and FSDP2 need."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_a_plain_network_is_returned_as_it_is() -> None:
    net = network()
    assert unwrap(net) is net


def test_ddp_wrapper_is_removed(group_of_one: None) -> None:
    net = network()
    wrapped = DistributedDataParallel(net)
    assert list(wrapped.state_dict()) == [f"module.{key}" for key in PLAIN_KEYS]
    assert unwrap(wrapped) is net
    assert list(unwrap(wrapped).state_dict()) == PLAIN_KEYS


def test_fsdp2_network_is_left_as_it_is_with_its_keys(group_of_one: None) -> None:
    net = network()
    sharded = fully_shard(net)
    assert unwrap(sharded) is sharded
    assert list(sharded.state_dict()) == PLAIN_KEYS
