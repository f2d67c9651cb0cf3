"""Release smoke test of helios-export: a small CNN exported and checked in onnxruntime.

Runs inside a fresh virtual environment holding only the helios-export wheel and its declared
dependencies (onnx, onnxruntime, onnxscript, torch, helios-core).

Run:
    python tools/release/smoke/helios-export.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from helios.export import export_onnx


def main() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    )
    network.train()
    with tempfile.TemporaryDirectory() as folder:
        report = export_onnx(network, (torch.randn(2, 1, 8, 8),), Path(folder) / "cnn.onnx")
        assert report.verified
        assert report.file_size > 0
        assert report.max_abs_error is not None
        assert report.max_abs_error < 1e-4
    assert network.training  # returned to its previous mode
    print(f"helios-export smoke test: ok ({report.max_abs_error:.1e} max abs error)")


if __name__ == "__main__":
    main()
