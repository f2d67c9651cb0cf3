"""The parity check's pieces: verification inputs and the leaf-by-leaf comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helios.export._parity import ParityResult, compare_outputs, make_inputs


def test_inputs_change_dimension_0_of_dynamic_inputs_only() -> None:
    example = (torch.randn(2, 3), {"mask": torch.ones(2, 5, dtype=torch.bool)}, 4.0)

    new = make_inputs(example, 7, dynamic=[True, False])

    assert new[0].shape == (7, 3)
    assert new[0].dtype == torch.float32
    assert new[1]["mask"].shape == (2, 5)
    assert new[1]["mask"].dtype == torch.bool
    assert new[2] == 4.0


def test_inputs_are_seeded_and_leave_the_global_rng_alone() -> None:
    example = (torch.randn(2, 3),)
    state = torch.get_rng_state()

    first = make_inputs(example, 5, dynamic=[True])
    second = make_inputs(example, 5, dynamic=[True])

    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first[0], second[0])
    assert not torch.equal(first[0][:1], make_inputs(example, 1, dynamic=[True])[0])


def test_integer_inputs_stay_in_the_example_range() -> None:
    example = (torch.tensor([[3, 4], [7, 5]]),)

    tokens = make_inputs(example, 500, dynamic=[True])[0]

    assert tokens.dtype == torch.int64
    assert int(tokens.min()) == 3
    assert int(tokens.max()) == 7


def test_float_inputs_follow_the_example_scale() -> None:
    example = (torch.full((4, 100), 50.0) + torch.randn(4, 100),)

    values = make_inputs(example, 50, dynamic=[True])[0]

    assert 49.0 < float(values.mean()) < 51.0
    assert 0.5 < float(values.std()) < 2.0


def compared(
    expected: torch.Tensor, actual: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5
) -> ParityResult:
    result = ParityResult()
    compare_outputs(result, ["y"], [expected], [actual], batch_size=3, rtol=rtol, atol=atol)
    return result


def test_close_outputs_pass_and_report_their_errors() -> None:
    expected = torch.tensor([1.0, -2.0, 0.0, float("nan")])
    actual = np.array([1.00001, -2.0, 1e-6, np.nan], dtype=np.float32)

    result = compared(expected, actual)

    assert result.mismatches == []
    assert result.max_abs_error == pytest.approx(1e-5, rel=0.1)
    assert result.max_rel_error == pytest.approx(1e-5, rel=0.1)  # 0.0 vs 1e-6 is below atol


def test_outputs_beyond_tolerance_fail() -> None:
    result = compared(torch.tensor([1.0, 2.0]), np.array([1.0, 2.01], dtype=np.float32))

    assert [(m.output, m.batch_size) for m in result.mismatches] == [("y", 3)]
    assert "1 of 2 values outside rtol=0.0001, atol=1e-05" in result.mismatches[0].reason


@pytest.mark.parametrize(
    ("expected", "actual", "reason"),
    [
        (torch.zeros(2, 3), np.zeros((3, 2), dtype=np.float32), "shape (3, 2), expected (2, 3)"),
        (torch.zeros(2), np.zeros(2, dtype=np.float64), "dtype torch.float64"),
        (torch.tensor([1, 2]), np.array([1, 3]), "1 of 2 values differ"),
    ],
)
def test_shape_dtype_and_integer_differences_fail(
    expected: torch.Tensor, actual: np.ndarray, reason: str
) -> None:
    result = compared(expected, actual)

    assert len(result.mismatches) == 1
    assert reason in result.mismatches[0].reason
