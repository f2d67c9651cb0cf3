"""Retention: which checkpoints a folder keeps, as a pure function of what it holds.

Kept apart from the store so the rule reads in one place: the last ``keep_last`` by step, plus
the best ``keep_best`` by one metric. A checkpoint without that metric (or with NaN) is never
"best"; between equal values the older checkpoint wins: it was reached first, and a newer one
with the same value adds nothing that was measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from helios.core import CheckpointInfo

__all__ = ["rank_by_metric", "select_kept"]


def rank_by_metric(
    infos: Iterable[CheckpointInfo], metric: str, mode: Literal["min", "max"]
) -> list[CheckpointInfo]:
    """The checkpoints that carry ``metric``, best first (older first between equals)."""
    sign = 1.0 if mode == "min" else -1.0
    candidates = [
        info for info in infos if metric in info.metrics and not math.isnan(info.metrics[metric])
    ]
    return sorted(candidates, key=lambda info: (sign * info.metrics[metric], info.step))


def select_kept(
    infos: Iterable[CheckpointInfo],
    *,
    keep_last: int | None,
    keep_best: int,
    metric: str | None,
    mode: Literal["min", "max"],
) -> set[Path]:
    """The paths to keep among ``infos``; every other one may be deleted."""
    infos = list(infos)
    if keep_last is None:
        return {info.path for info in infos}
    by_step = sorted(infos, key=lambda info: info.step)
    kept = (
        {info.path for info in by_step[max(0, len(by_step) - keep_last) :]} if keep_last else set()
    )
    if keep_best and metric is not None:
        kept |= {info.path for info in rank_by_metric(infos, metric, mode)[:keep_best]}
    return kept
