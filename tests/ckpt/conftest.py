"""Shared helpers of the helios-ckpt tests: states whose every value shows a mix-up."""

from __future__ import annotations

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
