"""``helios verify-resume`` on a model that resumes exactly: every stop kind, identical.

Each ``verify-resume`` test has a module of its own: each trains 4 to 9 fresh processes, and
pytest-xdist hands out whole modules, so the three can run on different workers.
"""

from __future__ import annotations

import pytest
from cli_runs import helios


@pytest.mark.slow
def test_verify_resume_reports_identical_for_a_well_behaved_model() -> None:
    result = helios(
        "verify-resume",
        "--model",
        "verify_jobs:WellBehaved",
        "--data",
        "verify_jobs:Blobs",
        "--steps",
        "5",  # one epoch: three stops (mid-epoch, SIGKILL, at the last step), not four
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in ("SIGTERM mid-epoch", "SIGKILL between checkpoints", "SIGTERM at the last step"):
        assert f"{kind} (after step" in result.stdout, result.stdout
    assert "resumable: identical" in result.stdout
