"""Shared by tests/trainer/test_stop_signals_*.py: the job, and what a stop must leave behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resume_checks import assert_same_training, final_checkpoint

# 12 batches an epoch in one process, 6 on two ranks; stopped after step 3, mid-epoch.
BASE: dict[str, Any] = {
    "unit": "iteration",
    "total": 8,
    "checkpoint_every": 4,
    "log_every": 1,
    "seed": 5,
    "workers": 2,
}
STOP_AT = 3


def job(run_dir: Path, **extra: Any) -> dict[str, Any]:
    return {"run_dir": str(run_dir), **BASE, **extra}


def assert_stopped_at_the_step(run_dir: Path, output: str) -> None:
    assert "TrainingAbortedError" not in output, output
    assert "killed by signal" not in output, output
    state = final_checkpoint(run_dir)["training_state"]
    assert state["step"] == STOP_AT, output


def assert_resumed_as_straight(straight: Path, resumed: Path) -> None:
    """Final state (every rank's RNG included) and every ``metrics.jsonl`` record identical."""
    assert_same_training(straight, resumed)
    records = (straight / "metrics.jsonl").read_text().splitlines()
    assert records == (resumed / "metrics.jsonl").read_text().splitlines()
