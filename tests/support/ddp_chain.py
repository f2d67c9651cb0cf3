"""A DDP run (2 Gloo ranks) stopped twice, by an exception on rank 1 and by SIGTERM, then resumed.

Used by tests/trainer/test_ddp_*.py: one module per training unit, so pytest-xdist can run them
side by side. Each chain checks what each stop leaves behind, and the run resumed after the
second stop is compared with a straight run: one comparison covers both stops (a difference
from either would show), with fewer launches than a resumed run per stop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resume_checks import assert_same_training, final_checkpoint, run_script
from toy_training import run

from helios.ckpt import DirectoryCheckpointStore
from helios.trainer import RESUMABLE_EXIT_CODE


def settings(run_dir: Path, case: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"run_dir": str(run_dir), "devices": 2, "log_every": 1, "seed": 5, **case, **extra}


def straight(run_dir: Path, case: dict[str, Any]) -> Path:
    run(settings(run_dir, case))
    return run_dir


def fail_then_sigterm_then_resume(
    run_dir: Path,
    case: dict[str, Any],
    straight_dir: Path,
    *,
    fail_at: int,
    fail_in: str,
    sigterm_at: int,
) -> None:
    """Rank 1 raises after ``fail_at``; the resumed run gets SIGTERM after ``sigterm_at``."""
    failing = settings(run_dir, case, fail_at=fail_at, fail_rank=1, fail_in=fail_in)
    output = run_script("toy_training.py", failing, expect=1)
    assert "rank 1" in output
    log = (run_dir / "logs" / "rank-1.log").read_text()
    assert "Traceback" in log
    assert "injected failure" in log
    assert ("in train_step" in log) == (fail_in == "train_step")
    store = DirectoryCheckpointStore(run_dir / "checkpoints")
    for info in store.list():
        store.verify(info)  # earlier checkpoints are intact
    assert final_checkpoint(run_dir)["training_state"]["step"] < fail_at

    # SIGTERM to the launching process only, which relays it to the ranks.
    stopping = settings(run_dir, case, sigterm_at=sigterm_at, fail_rank=0, signal_parent=True)
    run_script("toy_training.py", stopping, expect=RESUMABLE_EXIT_CODE)
    assert final_checkpoint(run_dir)["training_state"]["step"] == sigterm_at

    run(settings(run_dir, case))  # launched from here: the ranks are fresh processes all the same
    assert_same_training(straight_dir, run_dir)
