"""Under a real 2-rank Gloo run, every logging point costs one all-reduce, not one per logger.

A callback, pickled into each spawned rank, wraps ``torch.distributed.all_reduce`` there and
counts the calls between the end of a step and its logging point (and over each validation).
"""

from __future__ import annotations

import json
from pathlib import Path

from counting_callbacks import CountAllReduces
from linear_job import Linear, Points

from helios.trainer import Trainer


def test_one_all_reduce_per_logging_point_on_two_ranks(tmp_path: Path) -> None:
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
        assert counts == {"per_log": [1, 1, 1, 1], "per_validation": [1, 1]}, rank
