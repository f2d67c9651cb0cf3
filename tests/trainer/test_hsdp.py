"""HSDP on 4 Gloo processes in a 2 x 2 mesh: trains, stops, resumes exactly.

Shard in pairs, replicate across them; stopped by SIGTERM to the launcher, resumed in fresh
processes, the run ends bitwise identical to a straight one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fsdp_job import run
from resume_checks import assert_same_training, final_checkpoint, run_script

from helios.trainer import RESUMABLE_EXIT_CODE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # launches 4 ranks three times
LIMIT = 600  # seconds for one launch of 4 ranks

# batch 4 per rank, accumulate 2, 4 ranks: 6 batches and 3 steps an epoch.
SETTINGS: dict[str, Any] = {
    "devices": 4,
    "replicate": 2,
    "unit": "iteration",
    "total": 5,
    "checkpoint_every": 2,
    "accumulate": 2,
    "batch_size": 4,
    "log_every": 1,
    "seed": 11,
}


def test_hsdp_trains_and_resumes_exactly(tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run({"run_dir": str(straight), **SETTINGS})
    log = (straight / "logs" / "rank-0.log").read_text()
    assert "sharded over mesh (2, 2)" in log
    run_script(
        "fsdp_job.py",
        {
            "run_dir": str(stopped),
            **SETTINGS,
            "sigterm_at": 4,
            "fail_rank": 0,
            "signal_parent": True,
        },
        expect=RESUMABLE_EXIT_CODE,
        timeout=LIMIT,
    )
    assert final_checkpoint(stopped)["training_state"]["step"] == 4
    run_script("fsdp_job.py", {"run_dir": str(stopped), **SETTINGS}, timeout=LIMIT)
    assert_same_training(straight, stopped)
