"""The toy job of ``toy_training`` under ``strategy="fsdp"``, recording every sample it trains on.

Runnable as a script with JSON settings, as ``toy_training.py`` is, plus:

- ``replicate``: HSDP, ``strategy=FSDP(replicate=N)``;
- ``kill_at``: SIGKILL this process (rank ``fail_rank``) after that optimizer step, no
  checkpoint, no clean-up: a crash between checkpoints.

Each rank appends one JSON line per training batch to ``run_dir/samples-rank<R>.jsonl``:
``{"epoch", "batches", "indices"}`` (``batches``: batches trained before this one), so a test
can check that an elastic resume sees every remaining sample of the epoch exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from toy_training import NoisyPoints, ToyData, ToyModel

from helios.ckpt import DirectoryCheckpointStore
from helios.core import ExportTarget, TrainingState
from helios.data import DataLoaderParams
from helios.trainer import FSDP, Trainer


class IndexedPoints(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """``NoisyPoints`` with each sample's index."""

    def __init__(self, size: int) -> None:
        self.points = NoisyPoints(size)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, y = self.points[index]
        return x, y, index


class IndexedData(ToyData):
    valid_size = 32  # samples in the validation set

    def setup(self) -> None:
        params = DataLoaderParams(
            batch_size=self.batch_size, shuffle=True, num_workers=self.workers
        )
        self.add_train(IndexedPoints(96), params)
        self.add_valid(IndexedPoints(self.valid_size), DataLoaderParams(batch_size=16))
        self.add_test(IndexedPoints(32), DataLoaderParams(batch_size=16))


class RecordingModel(ToyModel):
    """``ToyModel`` on indexed batches; records the indices; can SIGKILL itself."""

    def __init__(self, run_dir: str, kill_at: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.run_dir = Path(run_dir)
        self.kill_at = kill_at

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        x, y, index = batch
        rank = int(os.environ.get("RANK", "0"))
        record = {"epoch": state.epoch, "batches": state.batches, "indices": index.tolist()}
        with (self.run_dir / f"samples-rank{rank}.jsonl").open("a") as file:
            file.write(json.dumps(record) + "\n")
        return super().train_step((x, y), state)

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        return super().valid_step(batch[:2], step)

    def test_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        return super().test_step(batch[:2], step)

    def export_target(self) -> ExportTarget:
        return ExportTarget(self.net, (torch.zeros(3, 6),), input_names=["x"])

    def on_training_batch_end(self, state: TrainingState) -> None:
        if self.kill_at is not None and state.step == self.kill_at and self._my_turn():
            os.kill(os.getpid(), signal.SIGKILL)
        super().on_training_batch_end(state)


class FileOnlyStore:
    """A ``CheckpointStore`` without sharded saves: the trainer gathers FSDP state to rank 0."""

    def __init__(self, folder: Path) -> None:
        self.inner = DirectoryCheckpointStore(folder, keep_last=None)
        for name in ("save", "latest", "best", "list", "load", "wait", "close"):
            setattr(self, name, getattr(self.inner, name))


def run(settings: dict[str, Any]) -> None:
    settings = dict(settings)
    replicate = settings.pop("replicate", None)
    if replicate is not None:
        settings["strategy"] = FSDP(replicate=replicate)
    if settings.pop("file_only_store", False):
        settings["checkpoint_store"] = FileOnlyStore
        settings.pop("keep_checkpoints", None)
    model = RecordingModel(
        settings["run_dir"],
        kill_at=settings.pop("kill_at", None),
        fail_at=settings.pop("fail_at", None),
        sigterm_at=settings.pop("sigterm_at", None),
        fail_rank=settings.pop("fail_rank", None),
        signal_parent=settings.pop("signal_parent", False),
    )
    data = IndexedData(batch_size=settings.pop("batch_size", 8))
    data.valid_size = settings.pop("valid_size", 32)
    settings.setdefault("progress", False)
    settings.setdefault("tensorboard", False)
    Trainer(**settings).fit(model, data)


def samples_seen(run_dir: str | Path, epoch: int, before: int | None = None) -> list[int]:
    """Every index trained on in ``epoch`` (all ranks), of batches numbered below ``before``."""
    seen: list[int] = []
    for path in sorted(Path(run_dir).glob("samples-rank*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["epoch"] == epoch and (before is None or record["batches"] < before):
                seen.extend(record["indices"])
    return seen


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
