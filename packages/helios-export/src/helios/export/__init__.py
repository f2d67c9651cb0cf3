"""helios.export: oNNX export through torch.onnx (dynamo) with an onnxruntime parity check."""

from __future__ import annotations

__all__: list[str] = []
