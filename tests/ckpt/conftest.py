"""Shared helpers of the helios-ckpt tests: states that show a mix-up, and exact comparison."""

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


def assert_state_equal(actual: Any, expected: Any) -> None:
    """Exact equality of nested states: tensors with ``torch.equal``, the rest with ``==``."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor)
        assert actual.dtype == expected.dtype
        assert torch.equal(actual, expected)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict)
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_state_equal(actual[key], expected[key])
    elif isinstance(expected, list | tuple):
        assert type(actual) is type(expected)
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_state_equal(a, e)
    else:
        assert actual == expected
