"""An uneven validation set under FSDP: an error naming every rank's batches, not a hang.

Under FSDP every forward pass is a collective: a validation set that gives the ranks different
numbers of batches leaves one rank waiting for the other (with NCCL, a hang until the timeout);
with Gloo, seen before the check: "rank 1 of 2 was killed by signal SIGABRT without a Python
traceback", and a "Connection reset by peer" on rank 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fsdp_job import run


@pytest.mark.slow
def test_an_uneven_validation_set_under_fsdp_is_an_error_not_a_hang(tmp_path: Path) -> None:
    settings = {
        "run_dir": str(tmp_path),
        "strategy": "fsdp",
        "devices": 2,
        "unit": "iteration",
        "total": 2,
        "batch_size": 4,
        "valid_size": 33,  # 17 and 16 samples, batches of 16: 2 batches on rank 0, 1 on rank 1
        "seed": 5,
    }
    with pytest.raises(Exception, match=r"evaluation set gives ranks 0 to 1 \[2, 1\] batches"):
        run(settings)
