"""What the ranks of the sharded-checkpoint tests run (processes started by ``helios.dist.spawn``).

Each function is one rank's part: it trains a small FSDP2 model on a 2-rank Gloo CPU mesh,
saves and loads sharded checkpoints, and writes what it saw with ``torch.save`` into a folder the
test reads back, so the assertions (and their messages) live in the test.
"""

from __future__ import annotations

import errno
import os
import signal
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from helios.ckpt import CheckpointWarning, DirectoryCheckpointStore, _sharded, consolidate
from helios.dist import TorchDistributed

TIMEOUT = timedelta(minutes=4)  # generous: the two cores are shared with other test jobs


def make_model(world_size: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The same small network on every rank, each Linear a sharding unit, and AdamW."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 6), nn.Linear(6, 3))
    mesh = init_device_mesh("cpu", (world_size,))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int, rank: int) -> None:
    """One AdamW step on a batch that depends on the step and the rank."""
    generator = torch.Generator().manual_seed(100 * step + rank)
    inputs = torch.randn(4, 8, generator=generator)
    optimizer.zero_grad()
    model(inputs).square().mean().backward()
    optimizer.step()


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What a sharded checkpoint holds: DTensor state dicts, and a per-rank object."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    rank = torch.distributed.get_rank()
    return {
        "model": model_state,
        "optimizer": optimizer_state,
        "trainer": {"step": 0, "name": "fsdp"},
        "rng": {f"rank{rank}": torch.full((3,), float(rank))},
    }


def full_copy(value: Any) -> Any:
    """``value`` with every DTensor gathered (a collective) and every tensor cloned."""
    if isinstance(value, DTensor):
        return value.full_tensor().detach().clone()
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: full_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [full_copy(item) for item in value]
    return value


def gathered_full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """PyTorch's own full (unsharded) state dicts of the model and optimizer."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=False)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    return full_copy({"model": model_state, "optimizer": optimizer_state})


def _fail_hashing(folder: Path, rank: int) -> dict[str, tuple[int, str]]:
    raise OSError(errno.ENOSPC, "No space left on device (injected on rank 1)")


def _load_latest(store: DirectoryCheckpointStore, model: nn.Module, optimizer: Any) -> Any:
    """Load the newest good checkpoint into a fresh state dict; its full tensors and warnings."""
    state = sharded_state(model, optimizer)
    state["trainer"] = {"step": -1, "name": ""}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointWarning)
        store.load_sharded(None, state)
    return full_copy(state), [str(w.message) for w in caught]


def _damage(folder: Path, case: str) -> bytes | None:
    shard = folder / "__1_0.distcp"
    original = shard.read_bytes()
    if case == "truncated":
        shard.write_bytes(original[: len(original) // 2])
    elif case == "flipped":
        damaged = bytearray(original)
        damaged[len(damaged) // 3] ^= 0x01
        shard.write_bytes(bytes(damaged))
    else:
        (folder / _sharded.MANIFEST).rename(folder.parent / "manifest.aside")
    return original


def _repair(folder: Path, case: str, original: bytes | None) -> None:
    if case == "manifest missing":
        (folder.parent / "manifest.aside").rename(folder / _sharded.MANIFEST)
    elif original is not None:
        (folder / "__1_0.distcp").write_bytes(original)


def sharded_checkpoints(folder: str) -> None:
    """Retention, async commit and failure, fallback past three kinds of damage, consolidation."""
    out = Path(folder)
    with TorchDistributed.from_environment(backend="gloo", device="cpu", timeout=TIMEOUT) as ctx:
        rank, world = ctx.rank, ctx.world_size
        results: dict[str, Any] = {}
        store = DirectoryCheckpointStore(out / "checkpoints", keep_last=2)
        model, optimizer = make_model(world)
        listed = []
        for step in (1, 2, 3):
            train_step(model, optimizer, step, rank)
            info = store.save_sharded(sharded_state(model, optimizer), step=step, epoch=0)
            listed.append(sorted(path.name for path in store.directory.iterdir()))
        results["listed"] = listed
        results["info3"] = info

        # Asynchronous: training goes on while the shards are written; what is saved is the
        # state at the time of the call.
        train_step(model, optimizer, 4, rank)
        at_save = full_copy(sharded_state(model, optimizer))
        results["at_save_full"] = gathered_full_state(model, optimizer)
        pending = store.save_sharded(
            sharded_state(model, optimizer), step=4, epoch=0, asynchronous=True
        )
        train_step(model, optimizer, 5, rank)  # changes every parameter while it writes
        store.wait()
        results["pending"] = pending
        results["after_async"] = full_copy(sharded_state(model, optimizer))
        results["at_save"] = at_save
        results["latest_after_async"] = store.latest()
        loaded, _ = _load_latest(store, model, optimizer)
        results["loaded_async"] = loaded

        # A failing asynchronous save surfaces at wait(), and at the next save.
        original = _sharded.hash_own_files
        if rank == 1:
            _sharded.hash_own_files = _fail_hashing  # type: ignore[assignment]
        try:
            store.save_sharded(sharded_state(model, optimizer), step=5, epoch=0, asynchronous=True)
            try:
                store.wait()
                results["wait_error"] = None
            except Exception as exc:
                results["wait_error"] = f"{type(exc).__name__}: {exc}"
            store.save_sharded(sharded_state(model, optimizer), step=6, epoch=0, asynchronous=True)
            try:
                store.save_sharded(sharded_state(model, optimizer), step=7, epoch=0)
                results["next_save_error"] = None
            except Exception as exc:
                results["next_save_error"] = f"{type(exc).__name__}: {exc}"
        finally:
            _sharded.hash_own_files = original  # type: ignore[assignment]
        ctx.barrier()
        results["after_failures"] = sorted(path.name for path in store.directory.iterdir())
        results["latest_after_failures"] = store.latest()
        ctx.barrier()  # both ranks looked before step 8 starts

        # A newer checkpoint, then damage it three ways: each time the older one is used.
        store.save_sharded(sharded_state(model, optimizer), step=8, epoch=0)
        newest = store.directory / "step-00000008"
        for case in ("truncated", "flipped", "manifest missing"):
            ctx.barrier()
            original_bytes = _damage(newest, case) if rank == 0 else None
            ctx.barrier()
            loaded, caught = _load_latest(store, model, optimizer)
            results[f"damaged {case}"] = {
                "latest": store.latest() if rank == 0 else None,
                "loaded": loaded,
                "warnings": caught,
                "single_process": store.load()["model"] if rank == 0 else None,
            }
            ctx.barrier()
            if rank == 0:
                _repair(newest, case, original_bytes)
        ctx.barrier()

        # Consolidation of step 4 into one ordinary file, read back with helios.ckpt.
        if rank == 0:
            written = consolidate(store.directory / "step-00000004", out / "step-00000004.pt")
            reader = DirectoryCheckpointStore(out, keep_last=None)
            results["consolidated"] = reader.load(written)
            results["consolidated_info"] = reader.list()
            reader.close()
        torch.save(results, out / f"rank{rank}.pt")
        ctx.barrier()

        # Last, rank 1 is SIGKILLed in the middle of a sharded save: its shards are written and
        # fsynced, only the commit is missing. The job ends there (the test expects it to fail).
        if rank == 1:

            def killed(path: Path, rank: int) -> dict[str, tuple[int, str]]:
                (out / "killed").write_text(str(sorted(p.name for p in path.iterdir())))
                os.kill(os.getpid(), signal.SIGKILL)
                raise AssertionError("unreachable")

            _sharded.hash_own_files = killed  # type: ignore[assignment]
        store.save_sharded(sharded_state(model, optimizer), step=9, epoch=0)
        raise AssertionError(f"rank {rank}: the save of step 9 returned although rank 1 died")
