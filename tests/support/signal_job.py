"""The toy training job of toy_training.py, made to wait for a scheduler's stop signal.

Run it as a job is run: ``python tests/support/signal_job.py SETTINGS_JSON`` (one process or
``devices=2``), or under ``torchrun``. With ``wait_at`` set, every rank writes
``RUN_DIR/waiting-<rank>`` after that optimizer step and waits there until its own stop signal
has arrived, so whoever signals (a test, tools/stress/signals.py) does it at a known step, as a
scheduler would: ``os.killpg`` of the job's process group. A rank that leaves with
``SystemExit`` writes its status to ``RUN_DIR/exit-<rank>`` (torchrun does not report it).
Settings besides toy_training's: ``wait_at``, ``persistent_workers`` and ``step_seconds`` (a
pause after every step, so that a signal sent at a random moment falls inside the run). Every
rank writes ``RUN_DIR/started-<rank>`` when training starts.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

from toy_training import ToyData, ToyModel

from helios.core import TrainingState
from helios.trainer import Trainer, _signals

WAIT_LIMIT = 120.0  # seconds a rank waits for its signal before it gives up

_arrived: list[int] = []
_original_handle = _signals.StopSignals._handle


def _recording_handle(
    self: _signals.StopSignals, number: int, frame: types.FrameType | None
) -> None:
    _arrived.append(number)
    _original_handle(self, number, frame)


# Module level, so ranks started by auto-spawn (which import this script) record arrivals too.
_signals.StopSignals._handle = _recording_handle  # type: ignore[method-assign]


class WaitingModel(ToyModel):
    """Waits after optimizer step ``wait_at`` until a stop signal has reached this process."""

    def __init__(self, wait_at: int | None, run_dir: str, step_seconds: float = 0.0) -> None:
        super().__init__()
        self.wait_at = wait_at
        self.run_dir = run_dir
        self.step_seconds = step_seconds

    def on_training_start(self) -> None:
        Path(self.run_dir, f"started-{os.environ.get('RANK', '0')}").write_text("")

    def on_training_batch_end(self, state: TrainingState) -> None:
        super().on_training_batch_end(state)
        time.sleep(self.step_seconds)
        if self.wait_at is None or state.step != self.wait_at:
            return
        self.wait_at = None  # once
        rank = os.environ.get("RANK", "0")
        Path(self.run_dir, f"waiting-{rank}").write_text(str(os.getpid()))
        deadline = time.monotonic() + WAIT_LIMIT
        while not _arrived and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # a relayed copy of the signal arrives now, and must count once


class SignalData(ToyData):
    def __init__(self, workers: int, persistent: bool) -> None:
        super().__init__(workers=workers)
        self.persistent = persistent

    def setup(self) -> None:
        super().setup()
        if self.persistent:
            self.replace_train_params(persistent_workers=True)


def run(settings: dict[str, Any]) -> None:
    settings = dict(settings)
    model = WaitingModel(
        settings.pop("wait_at", None), settings["run_dir"], settings.pop("step_seconds", 0.0)
    )
    data = SignalData(settings.pop("workers", 0), settings.pop("persistent_workers", False))
    settings.setdefault("progress", False)
    settings.setdefault("tensorboard", False)
    Trainer(**settings).fit(model, data)


if __name__ == "__main__":
    arguments = json.loads(sys.argv[1])
    try:
        run(arguments)
    except SystemExit as leaving:  # what this rank exited with, for jobs under torchrun
        name = f"exit-{os.environ.get('RANK', '0')}"
        Path(arguments["run_dir"], name).write_text(str(leaving.code))
        raise
