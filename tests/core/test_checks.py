"""Checks of a user's Model at training start (helios.core._checks), and Model.parameters()."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

from helios.core import (
    ConfigurationError,
    Model,
    ModelWarning,
    TrainingState,
    check_model_initialised,
    check_model_setup,
)


class TwoNetworks(Model):
    def setup(self) -> None:
        self.encoder = nn.Linear(4, 3)
        self.decoder = nn.Linear(3, 4)
        self.decoder.weight = nn.Parameter(self.encoder.weight.detach().t().clone())
        self.tied = nn.Sequential(self.encoder)  # shares every parameter of the encoder
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.1)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        return self.decoder(self.encoder(batch)).sum()


def test_parameters_yields_every_network_parameter_once() -> None:
    model = TwoNetworks()
    model.setup()
    expected = [*model.encoder.parameters(), *model.decoder.parameters()]
    got = list(model.parameters())
    assert [id(p) for p in got] == [id(p) for p in expected]  # the tied copy adds nothing
    assert len(model.optimizer.param_groups[0]["params"]) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_model_setup(model) == []


class NoSuperInit(Model):
    def __init__(self, width: int) -> None:
        self.width = width  # forgot super().__init__()

    def setup(self) -> None:
        self.net = nn.Linear(self.width, 1)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        return self.net(batch).sum()


def test_a_model_without_super_init_is_refused_naming_the_class() -> None:
    with pytest.raises(ConfigurationError, match=r"NoSuperInit.__init__ does not call super"):
        check_model_initialised(NoSuperInit(3))
    check_model_initialised(TwoNetworks())  # a proper one passes


class HeldInContainers(Model):
    def setup(self) -> None:
        self.net = nn.Linear(2, 2)
        self.heads = [nn.Linear(2, 1), nn.Linear(2, 1)]
        self.by_name = {"aux": {"deep": nn.Linear(2, 2)}}
        self.optimizers_list = (torch.optim.SGD(self.net.parameters(), lr=0.1),)
        self.optimizer = torch.optim.SGD(
            [*self.net.parameters(), *self.heads[0].parameters()], lr=0.1
        )
        self.fine = nn.ModuleList([nn.Linear(2, 2)])
        self.numbers = [1, 2, 3]

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        return self.net(batch).sum()


def test_networks_and_optimizers_in_plain_containers_are_named_in_warnings() -> None:
    model = HeldInContainers()
    model.setup()
    with pytest.warns(ModelWarning) as caught:
        messages = check_model_setup(model)
    assert [str(w.message) for w in caught] == messages
    assert len(messages) == 5
    assert messages[0].startswith("HeldInContainers.heads[0] is a network (Linear) in a plain list")
    assert "nn.ModuleList / nn.ModuleDict" in messages[0]
    assert messages[1].startswith("HeldInContainers.heads[1] is a network")
    assert messages[2].startswith("HeldInContainers.by_name['aux']['deep'] is a network")
    assert "in a plain dict" in messages[2]
    assert messages[3].startswith("HeldInContainers.optimizers_list[0] is an optimizer (SGD)")
    assert "one attribute per optimizer" in messages[3]
    # heads[0]'s weight and bias are updated by the optimizer but saved by nobody.
    assert messages[4].startswith("HeldInContainers.optimizer updates 2 parameter tensor(s)")
    assert "discovered: ['fine', 'net']" in messages[4]
