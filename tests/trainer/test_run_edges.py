"""Exact resume where runs really stop: the last step, an epoch's last step, hooks run again.

- A stop signal on the run's last step: the end-of-run work (final validation,
  ``on_training_end``, the finished checkpoint) still happens, so nothing is left undone; a run
  that crashed after its last step's checkpoint finishes that work when resumed.
- A crash right after the checkpoint of an epoch's last step: that step's epoch-end validation
  came before the checkpoint, so the resumed run does not log it again.
- ``on_training_epoch_start`` that draws random numbers: a resumed epoch calls it again with the
  RNG state of the epoch's start, so it draws the same and the streams after it do not shift; a
  resume at an epoch's end does not call it twice nor warn about a consumed epoch.

Every case compares the final state with ``torch.equal`` and the whole ``metrics.jsonl``,
record by record, with a straight run.
"""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from resume_checks import assert_same_training, comparable_records, final_checkpoint
from state_checks import assert_nested_equal
from toy_training import ToyData, ToyModel

from helios.core import TrainingState
from helios.trainer import Trainer


class EdgeModel(ToyModel):
    """ToyModel plus ReduceLROnPlateau, a random draw per epoch and injected stops."""

    def __init__(self, *, kill_at: int | None = None, crash: str | None = None) -> None:
        super().__init__()
        self.kill_at = kill_at
        self.crash = crash
        self.epoch_starts: list[int] = []

    def setup(self) -> None:
        super().setup()
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=0.5, patience=0
        )

    def on_training_epoch_start(self, epoch: int) -> None:
        self.epoch_starts.append(epoch)
        # a curriculum picked at random: it changes every batch of the epoch
        self.scale = 0.5 + torch.rand(()).item()

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        if self.crash == "train_step" and state.step == self.kill_at:
            raise RuntimeError(f"crash after step {state.step}")
        x, y = batch
        return super().train_step((x * self.scale, y), state)

    def on_training_batch_end(self, state: TrainingState) -> None:
        if self.crash is None and state.step == self.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_training_end(self) -> None:
        if self.crash == "training_end":
            raise RuntimeError("crash before the end-of-run work")


def train(run_dir: Path, settings: dict[str, Any], model: EdgeModel | None = None) -> EdgeModel:
    model = model or EdgeModel()
    trainer = Trainer(run_dir, log_every=1, seed=11, progress=False, tensorboard=False, **settings)
    trainer.fit(model, ToyData())
    return model


def records(run_dir: Path) -> list[dict[str, Any]]:
    return comparable_records(run_dir)


def assert_same_run(straight: Path, resumed: Path) -> None:
    """Final state (schedulers, training state, RNG) and every metric record are identical."""
    assert_same_training(straight, resumed)
    a, b = final_checkpoint(straight), final_checkpoint(resumed)
    assert_nested_equal(a["trainer"], b["trainer"], "trainer")
    assert a["trainer"]["finished"]
    assert records(straight) == records(resumed)  # record by record, each once


# 12 batches an epoch; ReduceLROnPlateau follows every validation.
LAST_STEP = {"unit": "iteration", "total": 14, "valid_every": 4, "checkpoint_every": 7}


@pytest.fixture(scope="module")
def straight_last_step(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight-last-step")
    train(run_dir, LAST_STEP)
    return run_dir


def test_a_stop_signal_on_the_last_step_finishes_the_run(
    straight_last_step: Path, tmp_path: Path
) -> None:
    train(tmp_path, LAST_STEP, EdgeModel(kill_at=14))  # no SystemExit: it finished
    assert_same_run(straight_last_step, tmp_path)


def test_a_run_complete_but_not_finished_finishes_on_resume(
    straight_last_step: Path, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="crash before the end-of-run work"):
        train(tmp_path, LAST_STEP, EdgeModel(crash="training_end"))
    saved = final_checkpoint(tmp_path)
    assert saved["training_state"]["step"] == 14 and not saved["trainer"]["finished"]
    train(tmp_path, LAST_STEP)
    assert_same_run(straight_last_step, tmp_path)


# Checkpoints at every epoch end (step 12, 24), validation at every epoch end.
EPOCH_END = {"unit": "iteration", "total": 26, "checkpoint_every": 12}


@pytest.fixture(scope="module")
def straight_epoch_end(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight-epoch-end")
    train(run_dir, EPOCH_END)
    return run_dir


def test_a_crash_after_an_epoch_end_checkpoint_logs_its_validation_once(
    straight_epoch_end: Path, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="crash after step 12"):
        train(tmp_path, EPOCH_END, EdgeModel(kill_at=12, crash="train_step"))
    assert final_checkpoint(tmp_path)["training_state"]["step"] == 12
    train(tmp_path, EPOCH_END)
    valid_steps = [r["step"] for r in records(tmp_path) if "valid/loss" in r]
    assert valid_steps == [12, 24, 26]
    assert_same_run(straight_epoch_end, tmp_path)


@pytest.mark.parametrize("stop_at", [17, 12], ids=["inside-an-epoch", "at-an-epoch-end"])
def test_on_training_epoch_start_drawing_random_numbers_resumes_exactly(
    straight_epoch_end: Path, tmp_path: Path, stop_at: int
) -> None:
    with pytest.raises(SystemExit):
        train(tmp_path, EPOCH_END, EdgeModel(kill_at=stop_at))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(tmp_path, EPOCH_END)
    assert not [w for w in caught if "fully consumed" in str(w.message)]
    # inside epoch 1 the hook runs again (as it ran first); after epoch 0's end it does not
    assert resumed.epoch_starts == [1, 2]
    assert_same_run(straight_epoch_end, tmp_path)
