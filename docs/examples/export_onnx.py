"""Export a network to ONNX with ``helios.export`` alone, then run the file in onnxruntime.

    python docs/examples/export_onnx.py runs/export

``export_onnx`` writes the file only after ``onnx.checker`` accepted it and onnxruntime
reproduced PyTorch's outputs at batch sizes other than the example's; a network that cannot be
exported raises ``ExportError`` naming the module and the cause, and leaves no file behind.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from helios.export import ExportError, export_onnx


class Branchy(nn.Module):
    """Control flow that depends on the data: ``torch.export`` cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the .onnx files go")
    folder = parser.parse_args().folder

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
    report = export_onnx(
        net,
        (torch.randn(2, 1, 8, 8),),  # an example input; dimension 0 becomes a free batch size
        folder / "net.onnx",
        input_names=["image"],
        output_names=["logits"],
    )
    print(report)

    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    (logits,) = session.run(["logits"], {"image": images})
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    print("batch of 5:", logits.shape, "max abs error", float(np.abs(logits - expected).max()))

    try:
        export_onnx(Branchy(), (torch.randn(2, 4),), folder / "branchy.onnx")
    except ExportError as error:
        print("ExportError:", str(error).splitlines()[0][:90])
    print("branchy.onnx written:", (folder / "branchy.onnx").exists())


if __name__ == "__main__":
    main()
