"""A prediction job for the trainer's tests: 37 samples, batch 4, runnable under torchrun.

    python -m torch.distributed.run --nproc-per-node=2 tests/support/predict_job.py OUT_DIR

Each rank writes the list ``Trainer.predict`` returned to ``OUT_DIR/rank-<r>.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from helios.core import Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Trainer

SAMPLES = 37


def inputs() -> torch.Tensor:
    return torch.randn(SAMPLES, 5, generator=torch.Generator().manual_seed(3))


class PredictData(DataModule):
    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self) -> None:
        x = inputs()
        y = x.sum(dim=1, keepdim=True)
        self.add_train(TensorDataset(x, y), DataLoaderParams(batch_size=8, shuffle=True))
        self.add_valid(TensorDataset(x, y), DataLoaderParams(batch_size=8))
        self.add_predict(TensorDataset(x), DataLoaderParams(batch_size=self.batch_size))


class Regressor(Model):
    monitor = "loss"

    def setup(self) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x)[:, :1], y)

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.net(x)[:, :1], y)}

    def predict_step(self, batch: Any, index: int) -> torch.Tensor:
        (x,) = batch
        return self.net(x)


def main(out: Path) -> None:
    model = Regressor()
    model.setup()
    outputs = Trainer(out / "run", total=1, devices="cpu", progress=False).predict(
        model, PredictData(), checkpoint=None
    )
    torch.save(outputs, out / f"rank-{os.environ.get('RANK', '0')}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
