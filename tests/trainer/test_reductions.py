"""Under a real 2-rank Gloo run, a logging point costs two all-reduces, not one per logger.

One for the training means, one for the PerformanceMonitor's few figures of every rank.

A callback, pickled into each spawned rank, wraps ``torch.distributed.all_reduce`` there and
counts the calls between the end of a step and its logging point (and over each validation).
"""

from __future__ import annotations

import json
from pathlib import Path

from counting_callbacks import CountAllReduces
from linear_job import Linear, Points

from helios.trainer import Trainer


def test_two_all_reduces_per_logging_point_on_two_ranks(tmp_path: Path) -> None:
    Trainer(
        tmp_path,
        unit="iteration",
        total=4,
        log_every=1,
        valid_every=2,
        devices=2,
        backend="gloo",
        progress=False,
        callbacks=[CountAllReduces()],
    ).fit(Linear(), Points(32))
    for rank in (0, 1):
        counts = json.loads((tmp_path / f"all-reduces-{rank}.json").read_text())
        # the training means, and the PerformanceMonitor's figures of every rank (slow ranks)
        assert counts == {"per_log": [2, 2, 2, 2], "per_validation": [1, 1]}, rank
