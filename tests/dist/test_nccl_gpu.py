"""NCCL on real GPUs: one spawned rank per visible GPU. Skipped without CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helios_dist_workers as workers
import pytest
import torch

from helios.dist import TorchDistributed, spawn

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.distributed.is_nccl_available()),
    reason="needs CUDA and NCCL",
)


def test_one_rank_per_gpu_with_nccl(tmp_path: Path) -> None:
    gpus = torch.cuda.device_count()
    spawn(workers.nccl_job, gpus, args=(str(tmp_path),), backend="nccl", timeout=300)
    for rank in range(gpus):
        seen: dict[str, Any] = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert seen["backend"] == "nccl"
        assert seen["device"] == seen["parameter_device"] == f"cuda:{rank}"
        assert seen["current_device"] == rank
        assert seen["mean"] == {"x": sum(range(gpus)) / gpus}
        assert seen["gather"] == list(range(gpus))
        assert seen["agree"] is True
        assert seen["broadcast"] == "from 0"


def test_without_a_launcher_the_process_uses_the_first_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "HELIOS_DIST_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    with TorchDistributed.from_environment() as ctx:
        assert ctx.device == ctx.map_location == torch.device("cuda", 0)
        assert ctx.backend is None and not torch.distributed.is_initialized()
        net = ctx.wrap(torch.nn.Linear(2, 2))
        assert next(net.parameters()).device == torch.device("cuda", 0)
        assert ctx.all_reduce_mean({"x": torch.tensor(2.0, device="cuda")}) == {"x": 2.0}
