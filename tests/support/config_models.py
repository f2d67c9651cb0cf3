"""A model built from a config for the tests of ``helios fit`` and ``from_config``.

Its network width, optimizer and scheduler come from the config (as factories, made in
``setup``). ``HELIOS_TEST_SIGTERM_AT`` in the environment makes it send SIGTERM to its own
process after that optimizer step, once: the stopped run and a straight one share the config.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from toy_training import ToyData

from helios.core import Model, TrainingState

SIGTERM_AT = "HELIOS_TEST_SIGTERM_AT"
ADAMW = functools.partial(torch.optim.AdamW, lr=3e-3)


class ConfigModel(Model):
    """MLP with dropout; optimizer and scheduler from the config."""

    def __init__(
        self,
        width: int = 16,
        dropout: float = 0.3,
        optimizer: Callable[..., torch.optim.Optimizer] = ADAMW,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        loss: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.width, self.dropout = width, dropout
        self.make_optimizer, self.make_scheduler = optimizer, scheduler
        self.loss = loss if loss is not None else nn.BCEWithLogitsLoss()
        self._sigterm_at = int(os.environ.get(SIGTERM_AT, "0")) or None

    def setup(self) -> None:
        self.net = nn.Sequential(
            nn.Linear(6, self.width), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(self.width, 1)
        )
        self.optimizer = self.make_optimizer(self.net.parameters())
        if self.make_scheduler is not None:
            self.scheduler = self.make_scheduler(self.optimizer)

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self.net(x)
        accuracy = ((logits > 0).float() == y).float().mean()
        return {"loss": self.loss(logits, y), "accuracy": accuracy}

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": self.loss(self.net(x), y)}

    def on_training_batch_end(self, state: TrainingState) -> None:
        if self._sigterm_at is not None and state.step == self._sigterm_at:
            self._sigterm_at = None  # once
            os.kill(os.getpid(), signal.SIGTERM)


class ConfigData(ToyData):
    """The toy data; its loader workers may change on resume (the batches do not depend on them)."""

    safe_to_change_on_resume = ("workers",)


def config(run_dir: str, total: int = 8, lr: float = 3e-3) -> dict[str, Any]:
    """A config of ConfigModel on the toy data: ``total`` steps, a checkpoint every 3."""
    return {
        "model": {
            "class": "config_models:ConfigModel",
            "width": 16,
            "optimizer": {"type": "AdamW", "lr": lr},
            "scheduler": {"type": "StepLR", "step_size": 3, "gamma": 0.5},
            "loss": {"type": "BCEWithLogitsLoss"},
        },
        "data": {"class": "config_models:ConfigData", "batch_size": 8},
        "trainer": {
            "run_dir": run_dir,
            "unit": "iteration",
            "total": total,
            "checkpoint_every": 3,
            "valid_every": 4,
            "log_every": 1,
            "seed": 3,
            "progress": False,
            "tensorboard": False,
            "devices": "cpu",
        },
    }
