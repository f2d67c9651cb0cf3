"""The onnxruntime parity check: run the ONNX file and PyTorch on the same inputs, compare.

The inputs are drawn at batch sizes other than the example's, because a file that only works at
the traced batch size is the most common silent export bug (a batch dimension baked into a
reshape). They come from a private, seeded :class:`torch.Generator`, never the global RNG, so an
export in the middle of training does not change the training's random stream, and the same
export always checks the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils import _pytree as pytree

if TYPE_CHECKING:  # numpy arrives with onnx and onnxruntime; it is not a declared dependency
    import numpy as np

__all__ = ["Mismatch", "ParityResult", "compare_outputs", "make_inputs", "run_onnxruntime"]

#: Seed of the generator the verification inputs are drawn from.
_SEED = 0


def make_inputs(
    example_inputs: tuple[Any, ...], batch_size: int, dynamic: Sequence[bool], seed: int = _SEED
) -> tuple[Any, ...]:
    """Random inputs shaped like the example, with dimension 0 set to ``batch_size``.

    Args:
        example_inputs: the example the network was exported with (any pytree of arguments).
        batch_size: the new size of dimension 0 of the dynamic inputs.
        dynamic: one flag per tensor leaf of ``example_inputs``: whether its dimension 0 is
            dynamic in the ONNX graph (the others keep the example's shape).
        seed: seed of the private generator.

    Returns:
        The new inputs, with the example's structure, dtypes and devices. Floating inputs have
        the example's mean and standard deviation; integer inputs lie within the example's
        range; booleans are fair coin flips; non-tensor leaves are the example's.
    """
    generator = torch.Generator().manual_seed(seed + batch_size)
    flags = iter(dynamic)

    def draw(leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor):
            return leaf
        shape = list(leaf.shape)
        if next(flags) and shape:
            shape[0] = batch_size
        reference = leaf.detach().cpu()
        if reference.dtype == torch.bool:
            new = torch.randint(0, 2, shape, generator=generator).bool()
        elif reference.dtype.is_floating_point:
            values = reference.double()
            mean = values.mean().item() if values.numel() else 0.0
            std = values.std().item() if values.numel() > 1 else 1.0
            std = std if math.isfinite(std) and std > 0 else 1.0
            mean = mean if math.isfinite(mean) else 0.0
            noise = torch.randn(shape, generator=generator, dtype=torch.float64)
            new = (noise * std + mean).to(reference.dtype)
        elif reference.is_complex():
            new = torch.randn(shape, generator=generator, dtype=reference.dtype)
        else:
            low = int(reference.min()) if reference.numel() else 0
            high = int(reference.max()) if reference.numel() else 0
            new = torch.randint(low, high + 1, shape, generator=generator, dtype=reference.dtype)
        return new.to(leaf.device)

    result: tuple[Any, ...] = pytree.tree_map(draw, example_inputs)
    return result


def run_onnxruntime(path: Path, inputs: Sequence[torch.Tensor]) -> list[np.ndarray[Any, Any]]:
    """Run the ONNX file at ``path`` on CPU with onnxruntime and return its outputs in order.

    Args:
        path: the ONNX file.
        inputs: one tensor per graph input, in the graph's order.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the warnings concern graph optimisation
    options.intra_op_num_threads = 1  # tiny check; do not compete with training for cores
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    names = [graph_input.name for graph_input in session.get_inputs()]
    feed = {name: tensor.detach().cpu().numpy() for name, tensor in zip(names, inputs, strict=True)}
    outputs: list[np.ndarray[Any, Any]] = session.run(None, feed)
    return outputs


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One output that onnxruntime did not reproduce.

    Attributes:
        output: the output's name.
        batch_size: the batch size it was checked at.
        reason: what differs (shape, dtype, or the size of the error).
    """

    output: str
    batch_size: int
    reason: str


@dataclasses.dataclass
class ParityResult:
    """The largest errors seen so far and the outputs that missed the tolerances."""

    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    mismatches: list[Mismatch] = dataclasses.field(default_factory=list)


def compare_outputs(
    result: ParityResult,
    names: Sequence[str],
    expected: Sequence[torch.Tensor],
    actual: Sequence[np.ndarray[Any, Any]],
    *,
    batch_size: int,
    rtol: float,
    atol: float,
) -> None:
    """Compare onnxruntime's outputs with PyTorch's, leaf by leaf, and record into ``result``.

    An element passes when ``|actual - expected| <= atol + rtol * |expected|`` (NaN matches NaN),
    as in :func:`torch.isclose`; integer and boolean outputs must be equal.

    Args:
        result: where the largest errors and the mismatches are recorded.
        names: the output names, for the messages.
        expected: PyTorch's outputs, flattened.
        actual: onnxruntime's outputs, in the same order.
        batch_size: the batch size these outputs belong to.
        rtol: relative tolerance.
        atol: absolute tolerance.
    """
    for name, torch_output, produced in zip(names, expected, actual, strict=True):
        reference = torch_output.detach().cpu()
        onnx_output = torch.from_numpy(produced)
        if tuple(onnx_output.shape) != tuple(reference.shape):
            reason = f"shape {tuple(onnx_output.shape)}, expected {tuple(reference.shape)}"
            result.mismatches.append(Mismatch(name, batch_size, reason))
            continue
        if onnx_output.dtype != reference.dtype:
            reason = f"dtype {onnx_output.dtype}, expected {reference.dtype}"
            result.mismatches.append(Mismatch(name, batch_size, reason))
            continue
        if reference.numel() == 0:
            continue
        if not (reference.dtype.is_floating_point or reference.is_complex()):
            if not torch.equal(onnx_output, reference):
                wrong = int((onnx_output != reference).sum())
                reason = f"{wrong} of {reference.numel()} values differ"
                result.mismatches.append(Mismatch(name, batch_size, reason))
            continue
        wide_reference = reference.to(torch.complex128 if reference.is_complex() else torch.float64)
        wide_output = onnx_output.to(wide_reference.dtype)
        both_nan = torch.isnan(wide_reference) & torch.isnan(wide_output)
        error = torch.where(both_nan, 0.0, (wide_output - wide_reference).abs()).real
        error = torch.nan_to_num(error, nan=math.inf)
        magnitude = wide_reference.abs().real
        large = magnitude > atol
        max_abs = float(error.max())
        max_rel = float((error[large] / magnitude[large]).max()) if bool(large.any()) else 0.0
        result.max_abs_error = max(result.max_abs_error, max_abs)
        result.max_rel_error = max(result.max_rel_error, max_rel)
        close = torch.isclose(wide_output, wide_reference, rtol=rtol, atol=atol, equal_nan=True)
        if not bool(close.all()):
            wrong = int((~close).sum())
            reason = (
                f"{wrong} of {reference.numel()} values outside rtol={rtol:g}, atol={atol:g} "
                f"(max abs error {max_abs:.3g}, max rel error {max_rel:.3g})"
            )
            result.mismatches.append(Mismatch(name, batch_size, reason))
