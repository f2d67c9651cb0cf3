"""``helios checkpoints`` with sharded checkpoints: listing both kinds, ``consolidate``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helios.ckpt import DirectoryCheckpointStore
from helios.trainer._cli import main


def _state(step: int) -> dict[str, object]:
    return {"model": {"weight": torch.full((3, 2), float(step))}, "trainer": {"step": step}}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    store = DirectoryCheckpointStore(tmp_path / "checkpoints", keep_last=None)
    store.save(_state(1), step=1, epoch=0)
    store.save_sharded(_state(2), step=2, epoch=0)
    store.close()
    return tmp_path


def test_checkpoints_lists_and_verifies_both_kinds(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["checkpoints", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert any(" ok " in line and "step-00000001.pt" in line for line in out.splitlines()), out
    assert any(" ok " in line and "step-00000002" in line.split() for line in out.splitlines())
    assert "resume would pick: step-00000002" in out

    shard = run_dir / "checkpoints" / "step-00000002" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-1])
    assert main(["checkpoints", str(run_dir)]) == 1
    captured = capsys.readouterr()
    assert "CORRUPT" in captured.out and "truncated" in captured.out
    assert "resume would pick: step-00000001.pt" in captured.out
    assert "the newest checkpoint, step-00000002, is CORRUPT" in captured.err
    # one sharded checkpoint named alone
    assert main(["checkpoints", str(run_dir / "checkpoints" / "step-00000002")]) == 1


def test_consolidate_writes_one_file_helios_ckpt_loads(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = run_dir / "checkpoints" / "step-00000002"
    out = tmp_path / "whole.pt"
    assert main(["checkpoints", "consolidate", str(folder), "-o", str(out)]) == 0
    assert f"as one checkpoint file {out}" in capsys.readouterr().out
    loaded = DirectoryCheckpointStore(tmp_path, keep_last=None).load(out)
    assert torch.equal(loaded["model"]["weight"], torch.full((3, 2), 2.0))

    assert main(["checkpoints", "consolidate", str(run_dir), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("helios checkpoints consolidate: error: ") and "manifest" in err
    assert len(err.strip().splitlines()) == 1
