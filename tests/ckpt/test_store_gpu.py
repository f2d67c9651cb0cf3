"""Checkpoints saved on a GPU load on the CPU or on another GPU (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helios.ckpt import DirectoryCheckpointStore

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("async_save", [False, True])
def test_saved_on_cuda0_loads_on_cpu(tmp_path: Path, async_save: bool) -> None:
    state = {"model": {"w": torch.randn(1000, device="cuda:0")}, "step": 3}
    with DirectoryCheckpointStore(tmp_path, async_save=async_save) as store:
        store.save(state, step=3, epoch=0)
    loaded = DirectoryCheckpointStore(tmp_path).load(map_location="cpu")
    assert loaded["model"]["w"].device == torch.device("cpu")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"].cpu())


def test_saved_on_cpu_loads_on_cuda0(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.save({"w": torch.arange(8.0)}, step=1, epoch=0)
    loaded = store.load(map_location="cuda:0")
    assert loaded["w"].device == torch.device("cuda:0")
    assert torch.equal(loaded["w"].cpu(), torch.arange(8.0))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_saved_on_cuda0_loads_on_cuda1(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.save({"w": torch.arange(8.0, device="cuda:0")}, step=1, epoch=0)
    loaded = store.load(map_location={"cuda:0": "cuda:1"})
    assert loaded["w"].device == torch.device("cuda:1")
    assert torch.equal(loaded["w"].cpu(), torch.arange(8.0))
