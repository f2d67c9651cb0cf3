"""The promise: a run stopped at any step and resumed in a fresh process ends bitwise identical.

Run A trains straight to the end. Run B is stopped at a step that is neither an epoch boundary
(12 batches an epoch) nor a checkpoint step, once by an exception raised in a callback (no
checkpoint: it resumes from the last periodic one) and once by SIGTERM sent to the process (it
finishes the step, checkpoints and exits with status 75), then resumed in a fresh process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from resume_checks import assert_same_training, final_checkpoint, metric_series, run_script
from toy_training import run

from helios.trainer import RESUMABLE_EXIT_CODE

UNITS: dict[str, dict[str, Any]] = {
    # 30 steps over 2.5 epochs; checkpoints every 5 steps; stopped at step 13 (epoch 1, batch 1)
    "iteration": {"unit": "iteration", "total": 30, "checkpoint_every": 5, "valid_every": 10},
    # 3 epochs of 12 steps; checkpoints at epoch ends; stopped at step 17 (epoch 1, batch 5)
    "epoch": {"unit": "epoch", "total": 3},
}
STOP_AT = {"iteration": 13, "epoch": 17}


def settings(run_dir: Path, unit: str, workers: int, **extra: Any) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "workers": workers,
        "log_every": 1,
        "seed": 3,
        **UNITS[unit],
        **extra,
    }


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    """Run A for every (unit, workers), trained once and shared by both ways of stopping."""
    runs = {}
    for unit in UNITS:
        for workers in (0, 2):
            run_dir = tmp_path_factory.mktemp(f"straight-{unit}-{workers}")
            run(settings(run_dir, unit, workers))
            runs[unit, workers] = run_dir
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("unit", ["iteration", "epoch"])
def test_exception_in_a_callback_then_resume_is_identical(
    straight_runs: dict[tuple[str, int], Path], tmp_path: Path, unit: str, workers: int
) -> None:
    stop = STOP_AT[unit]
    with pytest.raises(RuntimeError, match=f"injected failure at step {stop}"):
        run(settings(tmp_path, unit, workers, fail_at=stop))
    resumed_from = final_checkpoint(tmp_path)["training_state"]["step"]
    assert resumed_from < stop  # an exception writes no checkpoint
    run_script("toy_training.py", settings(tmp_path, unit, workers))
    assert_same_training(straight_runs[unit, workers], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("unit", ["iteration", "epoch"])
def test_sigterm_then_resume_is_identical(
    straight_runs: dict[tuple[str, int], Path], tmp_path: Path, unit: str, workers: int
) -> None:
    stop = STOP_AT[unit]
    with pytest.raises(SystemExit) as exited:
        run(settings(tmp_path, unit, workers, sigterm_at=stop))
    assert exited.value.code == RESUMABLE_EXIT_CODE
    state = final_checkpoint(tmp_path)["training_state"]
    assert state["step"] == stop  # the step finished, then a checkpoint was written
    assert state["batch_in_epoch"] not in (0, 12)
    run_script("toy_training.py", settings(tmp_path, unit, workers))
    assert_same_training(straight_runs[unit, workers], tmp_path)


def test_running_a_complete_run_again_trains_nothing(
    straight_runs: dict[tuple[str, int], Path],
) -> None:
    run_dir = straight_runs["iteration", 0]
    before = metric_series(run_dir, "train/loss")
    run(settings(run_dir, "iteration", 0))
    assert metric_series(run_dir, "train/loss") == before
    assert final_checkpoint(run_dir)["trainer"]["finished"]
