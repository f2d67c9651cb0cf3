"""What an ONNX export produced and how closely onnxruntime reproduces the PyTorch network.

The trainer and the ``helios`` command print it after an export; a script can read its fields
to decide whether the file is good enough (the parity check has already applied the tolerances).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["ExportReport"]


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """The result of :func:`~helios.export.export_onnx`.

    Attributes:
        path: the ONNX file written.
        opset: the ONNX opset of the default domain the file uses.
        file_size: bytes written: the ``.onnx`` file plus any external-data file beside it.
        seconds: wall time of the whole call (export, check and parity runs).
        max_abs_error: the largest ``|onnxruntime - torch|`` over every output element of every
            batch size checked (``None`` when not verified).
        max_rel_error: the largest ``|onnxruntime - torch| / |torch|`` over the elements whose
            reference magnitude exceeds ``atol`` (``None`` when not verified; ``0.0`` when no
            element is that large).
        batch_sizes: the batch sizes onnxruntime was run at (empty when not verified).
        input_names: the names of the graph inputs, in order.
        output_names: the names of the graph outputs, in the order of the flattened outputs.
        rtol: the relative tolerance the parity check applied.
        atol: the absolute tolerance the parity check applied.
        exporter_log: what ``torch.onnx.export`` printed, captured instead of shown.
    """

    path: Path
    opset: int
    file_size: int
    seconds: float
    max_abs_error: float | None
    max_rel_error: float | None
    batch_sizes: tuple[int, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    rtol: float = 1e-4
    atol: float = 1e-5
    exporter_log: str = dataclasses.field(default="", repr=False)

    @property
    def verified(self) -> bool:
        """Whether onnxruntime ran the file and matched PyTorch within the tolerances."""
        return bool(self.batch_sizes)

    def __str__(self) -> str:
        """A few lines for the console: where, how big, how fast, how close."""
        lines = [
            f"ONNX export: {self.path}",
            f"  opset {self.opset}, {_human_size(self.file_size)}, {self.seconds:.2f} s",
            f"  inputs:  {', '.join(self.input_names)}",
            f"  outputs: {', '.join(self.output_names)}",
        ]
        if self.verified:
            sizes = ", ".join(str(size) for size in self.batch_sizes)
            lines.append(
                f"  onnxruntime parity at batch sizes {sizes}: max abs error "
                f"{self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} "
                f"(rtol {self.rtol:g}, atol {self.atol:g})"
            )
        else:
            lines.append("  not verified with onnxruntime")
        return "\n".join(lines)


def _human_size(size: int) -> str:
    """``size`` bytes in B, KiB, MiB or GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
