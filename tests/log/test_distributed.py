"""helios.log across two real Gloo ranks: who writes what, metrics averaged, errors kept.

The process group is started here with ``torch.distributed`` (``helios.log`` must not depend on
``helios.dist``), and the ``DistributedContext`` is a small one written for the test, as a user
could write it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helios.core import DistributedContext
from helios.log import (
    MetricLoggerGroup,
    MetricsFileLogger,
    TensorBoardLogger,
    log_exception,
    setup_logging,
    teardown_logging,
)

T = TypeVar("T")
WORLD_SIZE = 2


class GlooContext:
    """A DistributedContext over an initialised Gloo process group on one node."""

    def __init__(self) -> None:
        self.rank = self.local_rank = dist.get_rank()
        self.node_rank = 0
        self.world_size = dist.get_world_size()
        self.device = torch.device("cpu")
        self.is_distributed = self.world_size > 1
        self.is_main_process = self.is_local_main_process = self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def all_reduce_mean(self, metrics: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
        values = torch.tensor([float(value) for value in metrics.values()], dtype=torch.float64)
        dist.all_reduce(values)
        return {
            name: value / self.world_size
            for name, value in zip(metrics, values.tolist(), strict=True)
        }

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        total = values.detach().clone()
        dist.all_reduce(total)
        return total

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj: T) -> list[T]:
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def agree(self, flag: bool, mode: Literal["any", "all"] = "any") -> bool:
        votes = self.all_gather_object(flag)
        return any(votes) if mode == "any" else all(votes)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def no_sync(self, module: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def train(rank: int, port: int, root: str) -> None:
    """One rank of a tiny run: log, record metrics through the group, fail on rank 1."""
    folder = Path(root)
    # What this rank prints to its terminal, kept for the test to read.
    sys.stderr = (folder / f"console-{rank}.txt").open("w", encoding="utf-8", buffering=1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    context = GlooContext()
    assert isinstance(context, DistributedContext)
    logger = setup_logging(
        folder / "logs", rank=rank, local_rank=rank, node_rank=0, world_size=WORLD_SIZE
    )
    logger.info("hello from rank %d", rank)
    group = MetricLoggerGroup(
        [
            TensorBoardLogger(folder / "tensorboard", enabled=context.is_main_process),
            MetricsFileLogger(folder / "metrics.jsonl", enabled=context.is_main_process),
        ],
        context=context,
        reduce=True,
    )
    group.log_hyperparameters({"rank_that_wrote": rank})
    for step in range(1, 6):
        # rank 0 sees step, rank 1 sees step + 10: the logged mean is step + 5
        group.log_scalars({"loss": float(step + 10 * rank), "acc": torch.tensor(rank + 0.5)}, step)
    group.close()
    context.barrier()
    try:
        if rank == 1:
            raise ValueError("bad batch on rank 1")
    except ValueError as error:
        log_exception(logger, error)
        raise
    finally:
        teardown_logging()
        context.close()


@pytest.mark.slow
def test_two_ranks_only_rank_0_writes_and_rank_1_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spawned ranks unpickle ``train`` by importing this module as ``tests.log.<name>``.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    with pytest.raises(mp.ProcessRaisedException, match="bad batch on rank 1"):
        mp.spawn(train, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)

    # TensorBoard: one event file, rank 0's, holding the means over both ranks.
    from tensorboard.backend.event_processing import event_accumulator

    event_files = list((tmp_path / "tensorboard").iterdir())
    assert len(event_files) == 1
    accumulator = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    accumulator.Reload()
    assert [(e.step, e.value) for e in accumulator.Scalars("loss")] == [
        (step, step + 5.0) for step in range(1, 6)
    ]
    assert [e.value for e in accumulator.Scalars("acc")] == [1.0] * 5
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(record.pop("time"), float) for record in records)
    assert records == [{"step": s, "acc": 1.0, "loss": s + 5.0} for s in range(1, 6)]
    hyperparameters = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"rank_that_wrote" in hyperparameters

    # Console: rank 0 only.
    assert "hello from rank 0" in (tmp_path / "console-0.txt").read_text()
    assert (tmp_path / "console-1.txt").read_text() == ""

    # Rank 1's file: its exception with the traceback, every line naming rank and node.
    lines = (tmp_path / "logs" / "rank-1.log").read_text().splitlines()
    assert all(line.startswith("[rank 1/2 node 0 local 1] ") for line in lines)
    text = "\n".join(lines)
    assert "Traceback (most recent call last):" in text
    assert 'raise ValueError("bad batch on rank 1")' in text
    assert "ValueError: bad batch on rank 1" in text
    assert "hello from rank 1" not in text  # INFO stays off the other ranks' files
    rank_0 = (tmp_path / "logs" / "rank-0.log").read_text()
    assert "hello from rank 0" in rank_0
    assert "bad batch" not in rank_0
