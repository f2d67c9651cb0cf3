"""A model that resumes exactly, and two that do not: what ``helios verify-resume`` reports.

Each class can be named on the command line (run from this folder, ``docs/examples``):

    helios verify-resume --model resume_pitfalls:Regression --data resume_pitfalls:Points
    helios verify-resume --model resume_pitfalls:UnseededNoise --data resume_pitfalls:Points
    helios verify-resume --model resume_pitfalls:HiddenCounter --data resume_pitfalls:Points

The first prints ``resumable: identical`` and exits 0. The other two exit 1, with the first
step whose loss differs, the first tensor that differs and the likely cause:

- ``UnseededNoise`` draws noise from ``numpy.random.default_rng()``, which seeds itself from
  the operating system, so two runs started the same way already differ: no checkpoint can
  make it resumable.
- ``HiddenCounter`` keeps a warm-up counter that is not an ``nn.Module``, optimizer, scheduler
  or scaler attribute, so checkpoints do not hold it: a resumed run restarts the warm-up.
  ``Regression`` shows the fix for state like that: ``extra_state_dict``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset

from helios.core import Model, TrainingState
from helios.data import DataLoaderParams, DataModule


class NoisyPoints(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Points on a line, with random noise added each time a sample is read."""

    def __init__(self, size: int) -> None:
        self.x = torch.linspace(-1, 1, size).unsqueeze(1)
        self.y = 3 * self.x + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # torch's global RNG: Helios seeds it per sample, so this noise resumes exactly.
        return self.x[index] + 0.01 * torch.randn(1), self.y[index]


class Points(DataModule):
    """64 training points in batches of 8: 8 optimizer steps an epoch."""

    def setup(self) -> None:
        self.add_train(NoisyPoints(64), DataLoaderParams(batch_size=8, shuffle=True))
        self.add_valid(NoisyPoints(16), DataLoaderParams(batch_size=16))


class Regression(Model):
    """Resumable: dropout, a scheduler, and a warm-up counter saved with ``extra_state_dict``."""

    def setup(self) -> None:
        self.net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.05, momentum=0.9)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=5)
        self.warmup = {"batches": 0}  # a plain dict: Helios does not discover it

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        self.warmup["batches"] += 1
        scale = min(1.0, self.warmup["batches"] / 10)
        return scale * functional.mse_loss(self.net(x), y)

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": functional.mse_loss(self.net(x), y)}

    def extra_state_dict(self) -> dict[str, Any]:
        return {"warmup": dict(self.warmup)}

    def load_extra_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.warmup = dict(state_dict["warmup"])


class HiddenCounter(Regression):
    """Not resumable: the same counter, but not saved in checkpoints."""

    def extra_state_dict(self) -> dict[str, Any]:
        return {}

    def load_extra_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class UnseededNoise(Regression):
    """Not even reproducible: noise from a generator seeded by the operating system."""

    def setup(self) -> None:
        super().setup()
        # The fix: helios.core.numpy_generator(), which Helios seeds and checkpoints.
        self.rng = np.random.default_rng()

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        noise = torch.from_numpy(self.rng.normal(0.0, 0.01, x.shape)).float()
        return functional.mse_loss(self.net(x + noise), y)
