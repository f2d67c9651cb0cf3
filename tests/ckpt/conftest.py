"""Shared helpers of the helios-ckpt tests: states whose every value shows a mix-up."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch


def make_state(step: int, *, numel: int = 64) -> dict[str, Any]:
    """A state whose every value depends on ``step``, so a mixed-up checkpoint shows."""
    generator = torch.Generator().manual_seed(step)
    return {
        "model": {
            "weight": torch.randn(numel, generator=generator),
            "bias": torch.full((4,), float(step)),
        },
        "optimizer": {"state": {0: {"step": torch.tensor(float(step))}}, "param_groups": []},
        "trainer": {"step": step, "epoch": step // 10, "name": f"run-{step}"},
    }


# Processes started by "spawn" import their target by module name; pytest's importlib mode gives
# test modules names they cannot import, so the functions the ranks of the sharded-checkpoint
# tests run live in ``helios_ckpt_workers.py`` here, importable by its plain name.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
