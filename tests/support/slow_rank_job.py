"""A 2-rank job whose rank 1 sleeps in every ``train_step``: a straggler for the monitor."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from toy_training import ToyModel

from helios.core import TrainingState

SLEEP_S = 0.25


class SleepyRank(ToyModel):
    """The toy model; on rank 1 each ``train_step`` first sleeps ``SLEEP_S``."""

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        if os.environ.get("RANK") == "1":
            time.sleep(SLEEP_S)
        return super().train_step(batch, state)
