"""``helios verify-resume`` catches an epoch-start hook drawing from an unsaved generator.

Every stop kind runs; the report names the one that exposed the difference (a stop at an
epoch's end, which starts the next epoch in a fresh process).
"""

from __future__ import annotations

import pytest
from cli_runs import helios


@pytest.mark.slow
def test_verify_resume_catches_an_epoch_start_hook_drawing_from_an_unsaved_generator() -> None:
    result = helios(
        "verify-resume",
        "--model",
        "verify_jobs:EpochStartFromPrivateGenerator",
        "--data",
        "verify_jobs:Blobs",
        "--steps",
        "12",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "resumable: NO" in result.stdout
    # 5 batches an epoch: a stop at an epoch's end always starts an epoch in a fresh process
    assert "SIGTERM at an epoch's last batch (after step" in result.stdout
    exposed = next(line for line in result.stdout.splitlines() if "exposed by:" in line)
    assert "SIGTERM at an epoch's last batch" in exposed
    assert "first differing metric record: step" in result.stdout
    assert "on_training_epoch_start" in result.stdout
