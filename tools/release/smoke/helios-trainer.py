"""Release smoke test of the helios meta-package: a Trainer fits, stops and resumes exactly.

Runs inside a fresh virtual environment holding only the helios wheel and what it declares
(every Helios package, tensorboard, tqdm, onnx, onnxruntime, onnxscript, torch, NumPy).

Run:
    python tools/release/smoke/helios-trainer.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from helios.core import Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Trainer


class Points(DataModule):
    def setup(self) -> None:
        x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
        self.add_train(TensorDataset(x, x.sum(1, keepdim=True)), DataLoaderParams(8, shuffle=True))


class Regressor(Model):
    def setup(self) -> None:
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.1), nn.Linear(8, 1))
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-2)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        options: dict[str, Any] = {"unit": "iteration", "checkpoint_every": 3, "progress": False}
        straight, stopped = Regressor(), Regressor()
        Trainer(Path(folder) / "a", total=12, **options).fit(straight, Points())
        Trainer(Path(folder) / "b", total=6, **options).fit(Regressor(), Points())
        Trainer(Path(folder) / "b", total=12, **options).fit(stopped, Points())
        for a, b in zip(straight.net.parameters(), stopped.net.parameters(), strict=True):
            assert torch.equal(a, b)
    print("helios smoke test: ok (a run resumed from a checkpoint ends identical)")


if __name__ == "__main__":
    main()
