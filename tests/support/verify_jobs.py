"""Models and data for the ``helios verify-resume`` tests: one resumable, one not."""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from helios.core import ExportTarget, Model, TrainingState
from helios.data import DataLoaderParams, DataModule


class Blobs(DataModule):
    """Two Gaussian blobs, 40 samples, batches of 8: 5 batches an epoch."""

    def setup(self) -> None:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(40, 4, generator=generator)
        y = (x[:, 0] > 0).long()
        self.add_train(TensorDataset(x, y), DataLoaderParams(batch_size=8, shuffle=True))


class WellBehaved(Model):
    """Dropout and AdamW: all randomness from the RNGs Helios checkpoints."""

    def setup(self) -> None:
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-2)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=3)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def export_target(self) -> ExportTarget:
        return ExportTarget(self.net, (torch.zeros(2, 4),), input_names=["x"])


class Unseeded(WellBehaved):
    """Draws noise from a private, unseeded ``random.Random()``: not reproducible."""

    def setup(self) -> None:
        super().setup()
        self.noise = random.Random()

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x * (1 + 0.1 * self.noise.random())), y)


class EpochStartFromPrivateGenerator(WellBehaved):
    """Picks a per-epoch input scale in ``on_training_epoch_start`` from an unsaved generator.

    Reproducible (the generator is seeded), but a resumed process restarts it from its seed, so
    the epoch after a resume draws another scale: exposed by stops at an epoch's end.
    """

    def setup(self) -> None:
        super().setup()
        self.curriculum = torch.Generator().manual_seed(3)
        self.scale = 1.0

    def on_training_epoch_start(self, epoch: int) -> None:
        self.scale = 0.5 + float(torch.rand((), generator=self.curriculum))

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x * self.scale), y)
