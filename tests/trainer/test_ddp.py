"""The promise under DDP: 2 Gloo processes, stopped and resumed, end bitwise identical.

Stopped once by an exception on rank 1 (in a callback, and in ``train_step``): both processes
end, the traceback is in rank 1's log, the exit status is non-zero and the earlier checkpoints
are intact. Stopped once by SIGTERM sent to the launching process, which relays it to the ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from resume_checks import assert_same_training, final_checkpoint, run_script
from toy_training import run

from helios.ckpt import DirectoryCheckpointStore
from helios.trainer import RESUMABLE_EXIT_CODE

# 96 samples, 8 per rank and batch: 6 steps an epoch on 2 ranks.
CASES: dict[str, dict[str, Any]] = {
    "iteration": {"unit": "iteration", "total": 16, "checkpoint_every": 5, "workers": 2},
    "epoch": {"unit": "epoch", "total": 2, "workers": 0},
}
STOP_AT = {"iteration": 8, "epoch": 9}

pytestmark = pytest.mark.slow  # each test launches 2 ranks twice


def settings(run_dir: Path, unit: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "devices": 2,
        "log_every": 1,
        "seed": 5,
        **CASES[unit],
        **extra,
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = {}
    for unit in CASES:
        runs[unit] = tmp_path_factory.mktemp(f"ddp-straight-{unit}")
        run(settings(runs[unit], unit))
    return runs


@pytest.mark.parametrize(("unit", "fail_in"), [("iteration", "train_step"), ("epoch", "callback")])
def test_exception_on_rank_1_then_resume_is_identical(
    straight: dict[str, Path], tmp_path: Path, unit: str, fail_in: str
) -> None:
    stop = STOP_AT[unit]
    failing = settings(tmp_path, unit, fail_at=stop, fail_rank=1, fail_in=fail_in)
    before = run_script("toy_training.py", failing, expect=1)
    assert "rank 1" in before
    log = (tmp_path / "logs" / "rank-1.log").read_text()
    assert "Traceback" in log
    assert "injected failure" in log
    assert ("in train_step" in log) == (fail_in == "train_step")
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    for info in store.list():
        store.verify(info)  # earlier checkpoints are intact
    assert final_checkpoint(tmp_path)["training_state"]["step"] < stop
    run(settings(tmp_path, unit))  # launched from here: the ranks are fresh processes all the same
    assert_same_training(straight[unit], tmp_path)


@pytest.mark.parametrize("unit", list(CASES))
def test_sigterm_then_resume_is_identical(
    straight: dict[str, Path], tmp_path: Path, unit: str
) -> None:
    stop = STOP_AT[unit]
    run_script(
        "toy_training.py",
        settings(tmp_path, unit, sigterm_at=stop, fail_rank=0, signal_parent=True),
        expect=RESUMABLE_EXIT_CODE,
    )
    assert final_checkpoint(tmp_path)["training_state"]["step"] == stop
    run(settings(tmp_path, unit))  # launched from here: the ranks are fresh processes all the same
    assert_same_training(straight[unit], tmp_path)
