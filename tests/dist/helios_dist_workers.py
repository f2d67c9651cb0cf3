"""What the processes of the helios-dist tests run (spawned children and torchrun workers).

Each function is one rank's part of a test: it does the distributed work and saves what it saw
with ``torch.save`` into a folder the test reads back, so the assertions (and their messages)
live in the test, in the parent.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from helios.dist import (
    TorchDistributed,
    global_rank,
    is_local_main_process,
    is_main_process,
    rank_zero_only,
)

TIMEOUT = timedelta(minutes=4)  # generous: the two cores are shared with other test jobs
STEPS = 20
GLOBAL_BATCH = 8


def make_network() -> nn.Module:
    """The same initial network in every process."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))


def training_batches() -> tuple[torch.Tensor, torch.Tensor]:
    """``STEPS`` global batches of ``GLOBAL_BATCH`` samples: inputs and targets."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(STEPS, GLOBAL_BATCH, 4, generator=generator)
    targets = torch.randn(STEPS, GLOBAL_BATCH, 2, generator=generator)
    return inputs, targets


def train(network: nn.Module, rows: slice) -> None:
    """SGD with momentum for ``STEPS`` steps on ``rows`` of each global batch."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    inputs, targets = training_batches()
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(network(inputs[step, rows]), targets[step, rows])
        loss.backward()
        optimizer.step()


def _save(folder: str, rank: int, results: dict[str, Any]) -> None:
    torch.save(results, Path(folder, f"rank{rank}.pt"))


@rank_zero_only
def _only_on_rank_zero() -> str:
    return "ran"


def _gradients(network: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in network.parameters() if p.grad is not None]


def collectives_and_ddp(folder: str) -> None:
    """Every collective, the rank helpers, DDP training and ``no_sync`` on one rank."""
    with TorchDistributed.from_environment(backend="gloo", device="cpu", timeout=TIMEOUT) as ctx:
        rank = ctx.rank
        results: dict[str, Any] = {
            "ranks": (ctx.rank, ctx.local_rank, ctx.node_rank, ctx.world_size),
            "flags": (ctx.is_distributed, ctx.is_main_process, ctx.is_local_main_process),
            "device": str(ctx.device),
            "map_location": str(ctx.map_location),
            "backend": ctx.backend,
            "launcher": ctx.launch.kind,
            "port": os.environ["MASTER_PORT"],
            "start_method": multiprocessing.get_start_method(),
            "helpers": (global_rank(), is_main_process(), is_local_main_process()),
            "rank_zero_only": _only_on_rank_zero(),
            "mean": ctx.all_reduce_mean(
                {"float": float(rank + 1), "tensor": torch.tensor(2.0 * rank), "int": rank}
            ),
            "sum": ctx.all_reduce_sum(torch.tensor([rank + 1.0, 10.0 * rank], dtype=torch.float64)),
            "broadcast": ctx.broadcast_object({"sender": rank, "payload": [rank] * 3}, src=1),
            "gather": ctx.all_gather_object(("rank", rank)),
            "agree": {
                "any_one": ctx.agree(rank == 1, "any"),
                "all_one": ctx.agree(rank == 1, "all"),
                "all_true": ctx.agree(True, "all"),
                "any_false": ctx.agree(False, "any"),
            },
        }
        ctx.barrier()

        wrapped = ctx.wrap(make_network())
        results["wrapped_type"] = type(wrapped).__name__
        results["device_ids"] = getattr(wrapped, "device_ids", "n/a")
        results["frozen_type"] = type(ctx.wrap(nn.Linear(2, 2).requires_grad_(False))).__name__
        half = GLOBAL_BATCH // ctx.world_size
        train(wrapped, slice(rank * half, (rank + 1) * half))
        results["state_dict"] = ctx.unwrap(wrapped).state_dict()

        # Different data on each rank: inside no_sync the gradients stay local.
        local_input = torch.full((2, 4), float(rank + 1))
        wrapped.zero_grad()
        with ctx.no_sync(wrapped):
            wrapped(local_input).sum().backward()
        results["grads_no_sync"] = ctx.all_gather_object(_gradients(wrapped))
        wrapped.zero_grad()
        wrapped(local_input).sum().backward()
        results["grads_synced"] = ctx.all_gather_object(_gradients(wrapped))
        _save(folder, rank, results)
    results_after = {"closed": ctx.closed, "group_left": not torch.distributed.is_initialized()}
    torch.save(results_after, Path(folder, f"after{rank}.pt"))


def rank_one_fails(folder: str) -> None:
    """Rank 1 raises while rank 0 waits for it in a barrier."""
    Path(folder, f"pid{os.environ['RANK']}").write_text(str(os.getpid()))
    with TorchDistributed.from_environment(backend="gloo", device="cpu", timeout=TIMEOUT) as ctx:
        if ctx.rank == 1:
            time.sleep(0.5)
            raise ValueError("rank one fails on purpose")
        ctx.barrier()


def rank_one_is_killed(folder: str) -> None:
    """Rank 1 is SIGKILLed (as by the OOM killer) while rank 0 waits for it in a barrier."""
    Path(folder, f"pid{os.environ['RANK']}").write_text(str(os.getpid()))
    with TorchDistributed.from_environment(backend="gloo", device="cpu", timeout=TIMEOUT) as ctx:
        if ctx.rank == 1:
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)
        ctx.barrier()


def rank_one_hangs(folder: str) -> None:
    """Rank 1 hangs, ignoring SIGTERM as a rank stuck in C code does; rank 0's barrier times out.

    The barrier's timeout is 3 s.
    """
    Path(folder, f"pid{os.environ['RANK']}").write_text(str(os.getpid()))
    short = timedelta(seconds=3)
    with TorchDistributed.from_environment(backend="gloo", device="cpu", timeout=short) as ctx:
        if ctx.rank == 1:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(3600)
        ctx.barrier()


def sleep_forever() -> None:
    """Never finish, and ignore SIGTERM: only SIGKILL ends this one (for the job timeout)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)


def job_mean(folder: str, base: float) -> None:
    """One rank of a small job: the mean of ``base + rank`` and every rank's rendezvous port."""
    with TorchDistributed.from_environment(backend="gloo", device="cpu", timeout=TIMEOUT) as ctx:
        results = {
            "mean": ctx.all_reduce_mean({"value": base + ctx.rank})["value"],
            "ports": ctx.all_gather_object(os.environ["MASTER_PORT"]),
            "world_size": ctx.world_size,
        }
        _save(folder, ctx.rank, results)


def nccl_job(folder: str) -> None:
    """One rank on its GPU with NCCL (the GPU tests)."""
    with TorchDistributed.from_environment(backend="auto", timeout=TIMEOUT) as ctx:
        wrapped = ctx.wrap(make_network())
        results = {
            "backend": ctx.backend,
            "device": str(ctx.device),
            "current_device": torch.cuda.current_device(),
            "mean": ctx.all_reduce_mean({"x": torch.tensor(float(ctx.rank), device="cuda")}),
            "gather": ctx.all_gather_object(ctx.rank),
            "agree": ctx.agree(ctx.rank == 0, "any"),
            "broadcast": ctx.broadcast_object(f"from {ctx.rank}", src=0),
            "parameter_device": str(next(ctx.unwrap(wrapped).parameters()).device),
        }
        ctx.barrier()
        _save(folder, ctx.rank, results)
