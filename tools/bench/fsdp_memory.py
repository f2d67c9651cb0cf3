"""Benchmark: per-rank bytes of parameters + gradients + optimizer state, FSDP2 vs DDP.

A model of about 50M parameters (a stack of MLP blocks, each a sharding unit) is trained for one
AdamW step on ``W`` Gloo CPU processes, once wrapped in DDP and once sharded the way
``Trainer(strategy="fsdp")`` shards it (:class:`helios.trainer._fsdp.ShardedModel`:
``fully_shard`` per block over a ``DeviceMesh``, the optimizer re-bound to the shards). Each
rank then counts the bytes its tensors really hold: parameters and gradients (the local shard of
a DTensor), and every tensor of the optimizer state. The goal of issue 17: FSDP2 per rank
``<= 1.1 / W`` of DDP's.

Counted after ``backward`` and before ``zero_grad``, when gradients and optimizer state are both
alive. Activations and communication buffers are not counted: they depend on the batch, not on
the strategy's bookkeeping. Run from the repository root:

    uv run python tools/bench/fsdp_memory.py [--ranks 2 4] [--width 1024] [--blocks 12]

Measured (2-core CPU machine, torch 2.15, Gloo)::

    model: 50.4M parameters, AdamW, float32
    per-rank bytes of parameters + gradients + optimizer state:
    W=2: per rank DDP 768.6 MiB, FSDP2 384.3 MiB, ratio 0.500 (goal <= 1.1/W = 0.550: ok)
    W=4: per rank DDP 768.6 MiB, FSDP2 192.1 MiB, ratio 0.250 (goal <= 1.1/W = 0.275: ok)
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.tensor import DTensor

from helios.core import Model, TrainingState
from helios.dist import TorchDistributed, free_port
from helios.trainer._fsdp import FSDP, ShardedModel


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(x)))


class Stack(Model):
    shard_modules = (Block,)

    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        self.width, self.blocks = width, blocks

    def setup(self) -> None:
        self.net = nn.Sequential(*(Block(self.width) for _ in range(self.blocks)))
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-4)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        return self.net(batch).square().mean()


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes this rank holds for ``tensor`` (a DTensor's local shard)."""
    if isinstance(tensor, DTensor):
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size()


def measure(model: Stack) -> dict[str, int]:
    parameters = list(model.net.parameters())
    optimizer_bytes = sum(
        local_bytes(value)
        for slots in model.optimizer.state.values()
        for value in slots.values()
        if isinstance(value, torch.Tensor)
    )
    return {
        "parameters": sum(local_bytes(p) for p in parameters),
        "gradients": sum(local_bytes(p.grad) for p in parameters if p.grad is not None),
        "optimizer": optimizer_bytes,
    }


def worker(rank: int, world: int, port: int, strategy: str, args: Any, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.manual_seed(0)
    context = TorchDistributed.from_environment(backend="gloo", device="cpu")
    model = Stack(args.width, args.blocks)
    model.setup()
    if strategy == "fsdp":
        ShardedModel(model, context, FSDP(), "32", logging.getLogger("bench"))
    else:
        model.net = context.wrap(model.net)  # type: ignore[assignment]
    batch = torch.randn(args.batch, args.width)
    model.train_step(batch, TrainingState()).backward()
    model.optimizer.step()  # creates the optimizer state; gradients are still there
    counted = measure(model)
    total = sum(counted.values())
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, total)
    if rank == 0:
        Path(out).write_text(str(max(gathered)))
    context.close()


def per_rank_bytes(world: int, strategy: str, args: Any) -> int:
    """The largest per-rank count over the ranks of one run."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "bytes")
        mp.spawn(worker, args=(world, free_port(), strategy, args, out), nprocs=world, join=True)
        return int(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    parameters = args.blocks * (4 * args.width * args.width + 3 * args.width)
    print(f"model: {parameters / 1e6:.1f}M parameters, AdamW, float32")
    print("per-rank bytes of parameters + gradients + optimizer state:")
    for world in args.ranks:
        ddp = per_rank_bytes(world, "ddp", args)
        fsdp = per_rank_bytes(world, "fsdp", args)
        ratio = fsdp / ddp
        verdict = "ok" if ratio <= 1.1 / world else "over goal"
        print(
            f"W={world}: per rank DDP {ddp / 2**20:.1f} MiB, FSDP2 {fsdp / 2**20:.1f} MiB, "
            f"ratio {ratio:.3f} (goal <= 1.1/W = {1.1 / world:.3f}: {verdict})"
        )


if __name__ == "__main__":
    main()
