"""Benchmark: what a sharded checkpoint costs next to DDP's one file, and how long async blocks.

Two CPU ranks (Gloo) train one step of a ~50M-parameter model sharded with FSDP2
(``fully_shard`` per layer, AdamW), then, in the same run and interleaved so disk and CPU noise
hit every variant alike, take the median of ``--repeat`` saves of each kind:

* **sharded**: ``DirectoryCheckpointStore.save_sharded`` — every rank writes its shards through
  DCP (fsynced), hashes them, rank 0 writes the manifest and renames the folder into place;
* **DDP-style**: rank 0 alone writes one file of the whole state with
  ``DirectoryCheckpointStore.save`` (under DDP every rank holds the full state already, so the
  gather is not timed);
* **async**: ``save_sharded(asynchronous=True)``: the time until it returns, which is how long
  training is blocked (the shards are written and committed in the background; the wait for
  that is not timed, but it happens before the next save) — goal <= 0.2 of the synchronous one.

Each time is the slowest rank's, between two barriers, after one untimed round of each kind (the
Gloo group of asynchronous saves is created once per run). Run from the repository root:

    uv run python tools/bench/sharded_checkpoint.py [--layers 12] [--width 2048] [--repeat 3]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from helios.ckpt import DirectoryCheckpointStore
from helios.dist import TorchDistributed, spawn


def build(layers: int, width: int, world_size: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """``layers`` Linear(width, width) layers, each an FSDP2 unit, and AdamW after one step."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(width, width) for _ in range(layers)))
    mesh = init_device_mesh("cpu", (world_size,))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(2, width)).square().mean().backward()
    optimizer.step()  # AdamW's moments exist: the checkpoint holds parameters + 2 moments
    return model, optimizer


def timed(fn: Any) -> float:
    """Seconds ``fn`` took on the slowest rank."""
    dist.barrier()
    start = time.perf_counter()
    fn()
    elapsed = torch.tensor(time.perf_counter() - start, dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return float(elapsed)


def rank_main(folder: str, layers: int, width: int, repeat: int) -> None:
    """One rank's part: build, then time the three kinds of save, interleaved."""
    with TorchDistributed.from_environment(
        backend="gloo", device="cpu", timeout=timedelta(minutes=20)
    ) as ctx:
        rank = ctx.rank
        model, optimizer = build(layers, width, ctx.world_size)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        sharded = {"model": model_state, "optimizer": optimizer_state, "trainer": {"step": 1}}
        full_model, full_optimizer = get_state_dict(
            model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        full = {"model": full_model, "optimizer": full_optimizer, "trainer": {"step": 1}}
        parameters = sum(p.numel() for p in model.parameters())
        store = DirectoryCheckpointStore(Path(folder, "sharded"), keep_last=1)
        single = DirectoryCheckpointStore(Path(folder, "single"), keep_last=1)
        times: dict[str, list[float]] = {"sharded": [], "single": [], "async": []}
        # One untimed round first: the Gloo group of asynchronous saves is created once per
        # run, and the first write of each kind pays for allocating buffers.
        store.save_sharded(sharded, step=0, epoch=0, asynchronous=True)
        store.wait()
        if rank == 0:
            single.save(full, step=0, epoch=0)
        save_single = single.save if rank == 0 else (lambda *args, **kwargs: None)
        for round_ in range(repeat):
            step = 3 * round_ + 1
            times["sharded"].append(
                timed(functools.partial(store.save_sharded, sharded, step=step, epoch=0))
            )
            times["single"].append(timed(functools.partial(save_single, full, step=step, epoch=0)))
            times["async"].append(
                timed(
                    functools.partial(
                        store.save_sharded, sharded, step=step + 2, epoch=0, asynchronous=True
                    )
                )
            )
            store.wait()
        store.close()
        single.close()
        ctx.barrier()
        if rank == 0:  # rank 0 prunes: only it may walk the folder safely
            sharded_files = Path(folder, "sharded").rglob("*")
            size = sum(path.stat().st_size for path in sharded_files if path.is_file())
            report(parameters, size, ctx.world_size, repeat, times)


def report(
    parameters: int, size: int, world_size: int, repeat: int, times: dict[str, list[float]]
) -> None:
    """Print the medians and the two ratios."""
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"sharded checkpoint benchmark: {world_size} ranks (gloo, CPU), "
        f"{parameters / 1e6:.1f}M parameters, checkpoint {size / 1e6:.0f} MB "
        f"(parameters + AdamW moments), median of {repeat}"
    )
    print(f"sharded save (every rank its shards, manifest commit): {median['sharded']:.3f} s")
    print(f"DDP-style save (rank 0 writes one file of everything): {median['single']:.3f} s")
    print(f"ratio sharded / DDP-style rank-0 file: {median['sharded'] / median['single']:.2f}")
    print(f"async sharded save blocks training for: {median['async']:.3f} s")
    print(
        f"ratio async blocked / synchronous sharded save: "
        f"{median['async'] / median['sharded']:.2f} (goal <= 0.2)"
    )


def main() -> None:
    """Parse the options and run the two ranks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="Linear layers (default 12)")
    parser.add_argument("--width", type=int, default=2048, help="their width (default 2048)")
    parser.add_argument("--repeat", type=int, default=3, help="saves of each kind (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: /tmp)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="helios-bench-sharded-", dir=args.dir))
    try:
        spawn(
            rank_main,
            2,
            args=(str(folder), args.layers, args.width, args.repeat),
            backend="gloo",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
