"""helios.export: ONNX export through ``torch.onnx`` (dynamo) with an onnxruntime parity check.

:func:`export_onnx` writes the file atomically, runs ``onnx.checker``, compares onnxruntime with
PyTorch at batch sizes other than the example's and returns an :class:`ExportReport`; every
failure is an :class:`ExportError`. The package needs torch, onnx, onnxruntime and onnxscript
only: it does not import the rest of Helios, so it can be installed on its own.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from helios.export._errors import ExportError
from helios.export._export import export_onnx
from helios.export._report import ExportReport

try:
    __version__ = version("helios-export")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["ExportError", "ExportReport", "__version__", "export_onnx"]
