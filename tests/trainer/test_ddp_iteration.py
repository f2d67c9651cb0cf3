"""The promise under DDP, iteration unit: two stops, then a resumed run identical to a straight one.

2 Gloo ranks with 2 loader workers each, stopped by an exception in ``train_step`` on rank 1
and, once resumed, by SIGTERM sent to the launching process (see tests/support/ddp_chain.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ddp_chain import fail_then_sigterm_then_resume, straight

# 96 samples, 8 per rank and batch: 6 steps an epoch on 2 ranks; checkpoints at 5, 10, 15.
CASE: dict[str, Any] = {"unit": "iteration", "total": 16, "checkpoint_every": 5, "workers": 2}


@pytest.mark.slow
def test_exception_on_rank_1_then_sigterm_then_resume_is_identical(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    reference = straight(tmp_path_factory.mktemp("ddp-straight-iteration"), CASE)
    fail_then_sigterm_then_resume(
        tmp_path, CASE, reference, fail_at=8, fail_in="train_step", sigterm_at=13
    )
