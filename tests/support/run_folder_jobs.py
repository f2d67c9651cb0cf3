"""Models and data for the run folder tests, runnable as a script like ``toy_training.py``.

    python tests/support/run_folder_jobs.py '{"run_dir": "...", "delay": 0.2, ...}'

trains :class:`Slow` (which can sleep after each step, or hold still until a file appears, so
another process can try the same folder meanwhile) on :class:`BlobsWithValidation`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset
from verify_jobs import WellBehaved

from helios.core import TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Trainer


class BlobsWithValidation(DataModule):
    """Two Gaussian blobs: 40 training samples (batches of 8), 16 validation and test ones."""

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self) -> None:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(72, 4, generator=generator)
        y = (x[:, 0] > 0).long()
        train = DataLoaderParams(batch_size=self.batch_size, shuffle=True)
        self.add_train(TensorDataset(x[:40], y[:40]), train)
        self.add_valid(TensorDataset(x[40:56], y[40:56]), DataLoaderParams(batch_size=8))
        self.add_test(TensorDataset(x[56:], y[56:]), DataLoaderParams(batch_size=8))


class Validated(WellBehaved):
    """``WellBehaved`` with a validation and test loss, monitored for "best"."""

    monitor = "loss"

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.net(x), y)}

    def test_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        return self.valid_step(batch, step)


class DivergesAt(Validated):
    """Its weights become NaN at optimizer step ``step`` (a NaN loss at the batch before)."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.diverge_at = step

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        loss = super().train_step(batch, state)
        return loss * math.nan if state.step + 1 == self.diverge_at else loss


class Slow(Validated):
    """Sleeps ``delay`` seconds after every optimizer step, and after step 2 waits for a file.

    With ``ballast`` set, it carries a buffer of that many floats (its checkpoints are big).
    With ``release`` set, the run holds still after step 2 (its first record logged) until that
    file exists (at most a minute), so a test can try the folder from another process meanwhile.
    """

    def __init__(self, delay: float, release: str | None = None, ballast: int = 0) -> None:
        super().__init__()
        self.delay = delay
        self.release = release
        self.ballast_size = ballast

    def setup(self) -> None:
        super().setup()
        if self.ballast_size:  # a big buffer, so that a checkpoint takes a while to write
            self.ballast = nn.Module()
            self.ballast.register_buffer("data", torch.zeros(self.ballast_size))

    def on_training_batch_end(self, state: TrainingState) -> None:
        time.sleep(self.delay)
        if self.release is not None and state.step == 2:
            deadline = time.monotonic() + 60
            while not os.path.exists(self.release) and time.monotonic() < deadline:
                time.sleep(0.02)


def run(settings: dict[str, Any]) -> None:
    settings = dict(settings)
    model = Slow(
        settings.pop("delay", 0.0), settings.pop("release", None), settings.pop("ballast", 0)
    )
    settings.setdefault("progress", False)
    settings.setdefault("tensorboard", False)
    settings.setdefault("devices", "cpu")
    Trainer(**settings).fit(model, BlobsWithValidation())


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
