"""Errors in fit: one traceback on the console, the log file keeps it; a changed model on resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from helios.core import ConfigurationError, Model, ResumeError, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Trainer

SUPPORT = Path(__file__).parents[1] / "support"
TRACEBACK = "Traceback (most recent call last)"


@pytest.mark.slow
def test_an_error_in_fit_prints_one_traceback_and_the_log_file_keeps_it(tmp_path: Path) -> None:
    settings = {"run_dir": str(tmp_path), "unit": "iteration", "total": 6, "fail_at": 3}
    completed = subprocess.run(
        [sys.executable, str(SUPPORT / "toy_training.py"), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stderr.count(TRACEBACK) == 1, completed.stderr
    assert completed.stderr.count("RuntimeError: injected failure at step 3") == 2
    log_file = tmp_path / "logs" / "rank-0.log"
    assert f"(traceback in {log_file})" in completed.stderr
    log = log_file.read_text(encoding="utf-8")
    assert log.count(TRACEBACK) >= 1
    assert "in on_training_batch_end" in log


class Points(DataModule):
    def setup(self) -> None:
        x = torch.linspace(-1, 1, 8).reshape(-1, 2)
        self.add_train(TensorDataset(x, x.sum(1, keepdim=True)), DataLoaderParams(batch_size=2))


class Regression(Model):
    def __init__(self, hidden: int = 0, second: bool = False) -> None:
        super().__init__()
        self.hidden, self.second = hidden, second

    def setup(self) -> None:
        if self.hidden:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(2, self.hidden), nn.Linear(self.hidden, 1)
            )
        else:
            self.net = nn.Sequential(nn.Linear(2, 1))
        if self.second:
            self.head = nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)


def trainer(run_dir: Path, total: int, resume: str = "auto") -> Trainer:
    return Trainer(
        run_dir=run_dir,
        unit="iteration",
        total=total,
        progress=False,
        tensorboard=False,
        resume=resume,
    )


HINT = (
    'use a new run_dir, or move the checkpoints out of {} and pass resume="never" to start over '
    "in this one"
)


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        (Regression(hidden=3), "network 'net' does not fit its saved state"),
        (Regression(second=True), "has networks ['head', 'net'] but the checkpoint holds"),
    ],
)
def test_a_changed_model_on_resume_suggests_a_new_run_dir(
    tmp_path: Path, changed: Model, reason: str
) -> None:
    trainer(tmp_path, 2).fit(Regression(), Points())
    with pytest.raises(ResumeError) as raised:
        trainer(tmp_path, 4).fit(changed, Points())
    message = str(raised.value)
    assert reason in message
    assert HINT.format(tmp_path / "checkpoints") in message
    # The hint is true: resume="never" alone refuses the folder; with the checkpoints moved
    # out, it starts over in it.
    with pytest.raises(ConfigurationError, match="already holds checkpoints"):
        trainer(tmp_path, 4, resume="never").fit(changed, Points())
    shutil.move(tmp_path / "checkpoints", tmp_path.parent / f"{tmp_path.name}-old")
    result = trainer(tmp_path, 4, resume="never").fit(changed, Points())
    assert result.state.step == 4
