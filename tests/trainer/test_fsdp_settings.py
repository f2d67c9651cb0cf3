"""``strategy`` and ``FSDP`` settings are checked when the trainer is made; sharding units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch import nn

from helios.core import ConfigurationError
from helios.trainer import FSDP, Trainer
from helios.trainer._fsdp import sharding_units


def make(tmp_path: Path, **extra: Any) -> Trainer:
    return Trainer(tmp_path, total=1, **extra)


@pytest.mark.parametrize("strategy", ["FSDP", "deepspeed", 2, None])
def test_an_unknown_strategy_is_refused_with_the_choices(tmp_path: Path, strategy: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"strategy must be one of .*'fsdp'.*got"):
        make(tmp_path, strategy=strategy)


def test_fsdp_refuses_float16_with_a_scaler(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'16-mixed' and strategy='fsdp' conflict"):
        make(tmp_path, strategy="fsdp", precision="16-mixed")
    with pytest.raises(ConfigurationError, match="conflict"):
        make(tmp_path, strategy=FSDP(replicate=2), precision="16-mixed")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replicate": 0}, "replicate must be a positive int .*got 0"),
        ({"replicate": True}, "replicate must be a positive int"),
        ({"reshard_after_forward": "yes"}, "reshard_after_forward must be True or False"),
        ({"cpu_offload": 1}, "cpu_offload must be True or False, got 1"),
    ],
)
def test_bad_fsdp_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FSDP(**options)


def test_good_strategies_are_kept(tmp_path: Path) -> None:
    assert make(tmp_path).settings.fsdp is None
    assert make(tmp_path, strategy="ddp").settings.fsdp is None
    assert make(tmp_path, strategy="fsdp").settings.fsdp == FSDP()
    hsdp = FSDP(replicate=2, reshard_after_forward=False)
    assert make(tmp_path, strategy=hsdp, precision="bf16").settings.fsdp is hsdp


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)


class Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


def test_default_units_are_the_direct_children_with_trainable_parameters() -> None:
    tower = Tower()
    assert sharding_units(tower, ()) == [tower.embed, tower.blocks, tower.head]


def test_named_unit_classes_are_found_at_any_depth_innermost_first() -> None:
    tower = Tower()
    assert sharding_units(tower, (Block,)) == [tower.blocks[1], tower.blocks[0]]
    units = sharding_units(tower, (Block, nn.Linear))
    assert units.index(tower.blocks[0].inner) < units.index(tower.blocks[0])
