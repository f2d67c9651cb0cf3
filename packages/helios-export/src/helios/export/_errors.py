"""The error an ONNX export raises when it cannot deliver a file that matches the network.

``helios.export`` depends on torch, the ONNX packages and, for ``unwrap`` alone, the light
``helios.core``; a user who installs just ``helios-export`` gets none of the trainer. Its error
type is defined here rather than derived from ``helios.core.HeliosError``; it derives from
:class:`RuntimeError`, as the exporter's own ``torch.onnx.OnnxExporterError`` does, so code that
already catches export failures keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from helios.export._report import ExportReport

__all__ = ["ExportError"]


class ExportError(RuntimeError):
    """A network could not be exported to ONNX, or the ONNX file does not match the network.

    Raised when ``torch.onnx.export`` fails, when ``onnx.checker`` rejects the file, when
    onnxruntime cannot load it, or when its outputs differ from PyTorch's beyond the tolerances.
    The message names the module and the cause; the original exception is chained.

    Attributes:
        log: what the exporter printed while it ran (captured, never written to the console).
        report: for a parity mismatch, the report of the checks that ran, else ``None``.
    """

    def __init__(self, message: str, *, log: str = "", report: ExportReport | None = None):
        """Create the error.

        Args:
            message: what failed, naming the module, the cause and what to do.
            log: the exporter's captured output.
            report: the parity report, when the failure is a mismatch.
        """
        super().__init__(message)
        self.log = log
        self.report = report
