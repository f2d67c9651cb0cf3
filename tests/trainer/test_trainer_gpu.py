"""CUDA paths of the trainer: bf16 and fp16 AMP, and a single-GPU NCCL run under torchrun.

Skipped without CUDA (CI has none); run on a GPU machine with ``uv run pytest tests/trainer``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resume_checks import SUPPORT, assert_same_training, final_checkpoint, run_script
from toy_training import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_amp_on_cuda_resumes_exactly(tmp_path: Path, precision: str) -> None:
    base = {
        "unit": "iteration",
        "total": 20,
        "checkpoint_every": 5,
        "log_every": 1,
        "precision": precision,
        "devices": 1,
        "deterministic": True,
    }
    run({"run_dir": str(tmp_path / "a"), **base})
    with pytest.raises(SystemExit):
        run({"run_dir": str(tmp_path / "b"), "sigterm_at": 7, **base})
    run_script("toy_training.py", {"run_dir": str(tmp_path / "b"), **base})
    assert_same_training(tmp_path / "a", tmp_path / "b")
    if precision == "16-mixed":
        assert final_checkpoint(tmp_path / "a")["scaler"]["scale"] > 0


def test_single_gpu_nccl_under_torchrun(tmp_path: Path) -> None:
    settings = {"run_dir": str(tmp_path), "unit": "iteration", "total": 10, "log_every": 1}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node=1",
            str(SUPPORT / "toy_training.py"),
            json.dumps(settings),
        ],
        check=True,
        timeout=300,
    )
    assert final_checkpoint(tmp_path)["training_state"]["step"] == 10
