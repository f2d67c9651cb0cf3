"""The Model base class: discovery, state round trip, hooks (helios.core._model)."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import torch
import torch.distributed as dist
from state_checks import round_trip
from torch import nn

from helios.core import ConfigurationError, Model, ResumeError, TrainingState


class Regressor(Model):
    monitor = "loss"

    def setup(self) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-2)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.5)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.loss = nn.MSELoss()
        self.not_discovered = [nn.Linear(1, 1)]

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        loss: torch.Tensor = self.loss(self.net(x), y)
        return loss


def one_step(model: Regressor, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    model.train()
    loss = model.train_step(batch, TrainingState())
    model.optimizer.zero_grad()
    loss.backward()
    model.optimizer.step()
    model.scheduler.step()


def make_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator)


def test_discovers_networks_optimizers_schedulers_scalers() -> None:
    model = Regressor()
    model.setup()
    assert set(model.networks()) == {"net", "loss"}
    assert set(model.optimizers()) == {"optimizer"}
    assert set(model.schedulers()) == {"scheduler"}
    assert set(model.scalers()) == {"scaler"}


def test_save_load_then_one_more_step_is_bitwise_identical() -> None:
    original = Regressor()
    original.setup()
    one_step(original, make_batch(1))
    state = round_trip(original.state_dict())

    restored = Regressor()
    restored.setup()
    one_step(restored, make_batch(99))  # diverge first, so loading must overwrite everything
    restored.load_state_dict(state)

    torch.manual_seed(1234)
    one_step(original, make_batch(2))
    torch.manual_seed(1234)  # same dropout masks for both
    one_step(restored, make_batch(2))

    for (name, a), b in zip(
        original.net.state_dict().items(), restored.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    a_state = original.optimizer.state_dict()["state"]
    b_state = restored.optimizer.state_dict()["state"]
    for index in a_state:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a_state[index][key], b_state[index][key])
    assert original.scheduler.state_dict() == restored.scheduler.state_dict()


def test_mismatched_attributes_are_a_resume_error() -> None:
    model = Regressor()
    model.setup()
    state = model.state_dict()
    state["optimizers"]["other"] = state["optimizers"]["optimizer"]
    fresh = Regressor()
    fresh.setup()
    with pytest.raises(ResumeError, match="optimizers"):
        fresh.load_state_dict(state)


def test_wrong_shapes_are_a_resume_error_naming_the_network() -> None:
    model = Regressor()
    model.setup()
    state = model.state_dict()
    model.net = nn.Sequential(nn.Linear(4, 9), nn.Dropout(0.1), nn.Linear(9, 1))
    with pytest.raises(ResumeError, match="'net'"):
        model.load_state_dict(state)


class WithExtra(Regressor):
    def setup(self) -> None:
        super().setup()
        self.counter = 0

    def extra_state_dict(self) -> dict[str, Any]:
        return {"counter": self.counter}

    def load_extra_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.counter = state_dict["counter"]


def test_extra_state_hook_round_trips() -> None:
    model = WithExtra()
    model.setup()
    model.counter = 41
    fresh = WithExtra()
    fresh.setup()
    fresh.load_state_dict(round_trip(model.state_dict()))
    assert fresh.counter == 41


def test_extra_state_without_loader_is_refused() -> None:
    model = WithExtra()
    model.setup()
    plain = Regressor()
    plain.setup()
    with pytest.raises(ResumeError, match="load_extra_state_dict"):
        plain.load_state_dict(model.state_dict())


def test_have_metrics_improved_follows_monitor_and_survives_restore() -> None:
    model = Regressor()
    model.setup()
    model.valid_metrics = {"loss": 1.0}
    assert model.have_metrics_improved()
    model.valid_metrics = {"loss": 2.0}
    assert not model.have_metrics_improved()
    fresh = Regressor()
    fresh.setup()
    fresh.load_state_dict(round_trip(model.state_dict()))
    fresh.valid_metrics = {"loss": 1.5}
    assert not fresh.have_metrics_improved()
    fresh.valid_metrics = {"loss": 0.5}
    assert fresh.have_metrics_improved()
    fresh.valid_metrics = {"accuracy": 0.5}
    with pytest.raises(ConfigurationError, match="monitor"):
        fresh.have_metrics_improved()


def test_train_eval_and_to_reach_every_network() -> None:
    model = Regressor()
    model.setup()
    model.eval()
    assert not model.net.training
    model.train()
    assert model.net.training
    model.to("cpu")
    assert model.device == torch.device("cpu")


def test_model_is_abstract() -> None:
    with pytest.raises(TypeError):
        Model()  # type: ignore[abstract]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_state_of_a_ddp_wrapped_network_has_no_module_prefix() -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model = Regressor()
        model.setup()
        plain_keys = set(model.net.state_dict())
        model.net = nn.parallel.DistributedDataParallel(model.net)  # type: ignore[assignment]
        state = model.state_dict()
        assert set(state["networks"]["net"]) == plain_keys
        fresh = Regressor()
        fresh.setup()
        fresh.load_state_dict(round_trip(state))
    finally:
        dist.destroy_process_group()
