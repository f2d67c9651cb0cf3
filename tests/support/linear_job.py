"""A linear regression job for the trainer's tests: no dropout, no batch-dependent layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from helios.core import Model, TrainingState
from helios.data import DataLoaderParams, DataModule


class Points(DataModule):
    def __init__(self, batch_size: int, with_test: bool = False) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.with_test = with_test

    def setup(self) -> None:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=generator)
        y = x @ torch.randn(8, 1, generator=generator)
        self.add_train(
            TensorDataset(x, y), DataLoaderParams(batch_size=self.batch_size, shuffle=True)
        )
        self.add_valid(TensorDataset(x[:64], y[:64]), DataLoaderParams(batch_size=24))
        if self.with_test:
            self.add_test(TensorDataset(x[:64], y[:64]), DataLoaderParams(batch_size=32))


class Linear(Model):
    """No batch-dependent layers: a mean loss over 64 equals the mean of 4 means over 16."""

    def setup(self) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.05)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.net(x), y)}
