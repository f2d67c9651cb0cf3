"""A small, fully random training job for the trainer's tests, runnable as a script.

The model has dropout and AdamW with a per-step scheduler; the data applies torch, NumPy and
Python ``random`` augmentation in ``__getitem__``. Run as a script it trains with the settings
given as JSON, so a test can stop a run in one process and resume it in a fresh one:

    python tests/support/toy_training.py '{"run_dir": "...", "unit": "iteration", ...}'

Settings besides the Trainer's: ``workers`` (loader workers), ``fail_at`` (raise in a callback
after that optimizer step, or in ``train_step`` of the batch after it with ``fail_in:
"train_step"``), ``sigterm_at`` (send SIGTERM to this process after that step),
``fail_rank`` (the rank that fails; default every rank), ``signal_parent`` (send the signal to
the parent process, the one that spawned the ranks), ``valid_sets`` (names of further validation
sets, each of other points), ``monitor`` (the model's monitored metric).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from helios.core import Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Trainer


class NoisyPoints(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fixed points with random augmentation from all three RNGs."""

    def __init__(self, size: int = 96, features: int = 6) -> None:
        generator = torch.Generator().manual_seed(1234)
        self.x = torch.randn(size, features, generator=generator)
        self.y = (self.x.sum(dim=1, keepdim=True) > 0).float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[index] + 0.1 * torch.randn(self.x.shape[1])
        x = x * float(np.random.uniform(0.9, 1.1))
        if random.random() < 0.5:
            x = -x.flip(0)
        return x, self.y[index]


class ToyData(DataModule):
    def __init__(
        self, workers: int = 0, batch_size: int = 8, valid_sets: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.workers = workers
        self.batch_size = batch_size
        self.valid_sets = valid_sets

    def setup(self) -> None:
        self.add_train(
            NoisyPoints(96),
            DataLoaderParams(batch_size=self.batch_size, shuffle=True, num_workers=self.workers),
        )
        self.add_valid(NoisyPoints(32), DataLoaderParams(batch_size=16))
        for index, name in enumerate(self.valid_sets):
            points = NoisyPoints(40 + 8 * index)
            points.x = points.x[-(24 + index) :] * 2  # not the points of the first set
            points.y = points.y[-(24 + index) :]
            self.add_valid(points, DataLoaderParams(batch_size=10), name)
        self.add_test(NoisyPoints(32), DataLoaderParams(batch_size=16))


class ToyModel(Model):
    """MLP with dropout, AdamW and a per-step scheduler; can fail or signal on request."""

    monitor = "loss"

    def __init__(
        self,
        fail_at: int | None = None,
        sigterm_at: int | None = None,
        fail_rank: int | None = None,
        signal_parent: bool = False,
        fail_in: str = "callback",
    ) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.fail_in = fail_in
        self.sigterm_at = sigterm_at
        self.fail_rank = fail_rank
        self.signal_parent = signal_parent

    def setup(self) -> None:
        self.net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 1))
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=3e-3)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=7, gamma=0.7)

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        if self.fail_in == "train_step" and state.step == self.fail_at and self._my_turn():
            raise RuntimeError(f"injected failure in train_step after step {state.step}")
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        accuracy = ((logits > 0).float() == y).float().mean()
        return {"loss": loss, "accuracy": accuracy}

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": nn.functional.binary_cross_entropy_with_logits(self.net(x), y)}

    def test_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"accuracy": ((self.net(x) > 0).float() == y).float().mean()}

    def _my_turn(self) -> bool:
        rank = int(os.environ.get("RANK", "0"))
        return self.fail_rank is None or rank == self.fail_rank

    def on_training_batch_end(self, state: TrainingState) -> None:
        failing = self.fail_in == "callback" and state.step == self.fail_at
        if failing and self._my_turn():
            raise RuntimeError(f"injected failure at step {state.step}")
        if self.sigterm_at is not None and state.step == self.sigterm_at and self._my_turn():
            self.sigterm_at = None  # once
            if self.signal_parent:  # as a scheduler would: to the launcher, which forwards it
                os.kill(os.getppid(), signal.SIGTERM)
                time.sleep(1.0)  # let the forwarded signal arrive before this step is judged
            else:
                os.kill(os.getpid(), signal.SIGTERM)


def run(settings: dict[str, Any]) -> None:
    settings = dict(settings)
    model = ToyModel(
        fail_at=settings.pop("fail_at", None),
        sigterm_at=settings.pop("sigterm_at", None),
        fail_rank=settings.pop("fail_rank", None),
        signal_parent=settings.pop("signal_parent", False),
        fail_in=settings.pop("fail_in", "callback"),
    )
    model.monitor = settings.pop("monitor", "loss")
    data = ToyData(
        workers=settings.pop("workers", 0),
        batch_size=settings.pop("batch_size", 8),
        valid_sets=tuple(settings.pop("valid_sets", ())),
    )
    settings.setdefault("progress", False)
    settings.setdefault("tensorboard", False)
    Trainer(**settings).fit(model, data)


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
