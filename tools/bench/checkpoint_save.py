"""Benchmark: what atomic, verified and asynchronous checkpoint saves cost.

Saves a ~200 MB state (a few large tensors and many small ones, like a model and its optimizer)
and reports two ratios the helios-ckpt issue sets goals for:

* synchronous ``DirectoryCheckpointStore.save`` (temporary file, SHA-256, fsync of file and
  folder, ``os.replace``) vs ``torch.save`` followed by an fsync, the fair comparison for
  durability — goal <= 1.10; also shown against plain ``torch.save`` — goal <= 1.15;
* the time an asynchronous save blocks the caller vs a synchronous save — goal <= 0.2.

Each figure is the median of ``--repeat`` runs, the variants interleaved so disk and CPU noise
hit them alike. Run from the repository root:

    uv run python tools/bench/checkpoint_save.py [--megabytes 200] [--repeat 5] [--dir PATH]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from helios.ckpt import DirectoryCheckpointStore


def make_state(megabytes: int) -> dict[str, Any]:
    """About ``megabytes`` MB of float32: a model's worth of weights plus Adam's two moments."""
    generator = torch.Generator().manual_seed(0)
    per_part = megabytes * 1_000_000 // 4 // 3  # floats per part: weights, exp_avg, exp_avg_sq
    big = [per_part // 4] * 3 + [per_part - 3 * (per_part // 4) - 64 * 1000]
    shapes = [(n,) for n in big] + [(1000,)] * 64  # a few large layers and many small ones

    def part() -> dict[str, torch.Tensor]:
        return {
            f"layer{i}": torch.randn(shape, generator=generator) for i, shape in enumerate(shapes)
        }

    return {
        "model": part(),
        "optimizer": {"exp_avg": part(), "exp_avg_sq": part(), "step": 100},
        "trainer": {"step": 100, "epoch": 1},
    }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="folder on the disk to test")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="helios-bench-", dir=args.dir))
    try:
        state = make_state(args.megabytes)
        nbytes = sum(
            t.numel() * t.element_size()
            for part in (
                state["model"],
                state["optimizer"]["exp_avg"],
                state["optimizer"]["exp_avg_sq"],
            )
            for t in part.values()
        )
        plain_path = root / "plain.pt"
        sync_store = DirectoryCheckpointStore(root / "sync", keep_last=1)
        async_store = DirectoryCheckpointStore(root / "async", keep_last=1, async_save=True)
        times: dict[str, list[float]] = {"plain": [], "plain+fsync": [], "sync": [], "async": []}

        def plain_fsync() -> None:
            torch.save(state, plain_path)
            fsync_file(plain_path)

        for step in range(args.repeat + 1):  # round 0 warms the page cache up; not counted
            rounds: dict[str, Callable[[], object]] = {
                "plain": lambda: torch.save(state, plain_path),
                "plain+fsync": plain_fsync,
                "sync": functools.partial(sync_store.save, state, step=step, epoch=0),
                "async": functools.partial(async_store.save, state, step=step, epoch=0),
            }
            for name, fn in rounds.items():
                seconds = timed(fn)
                if name == "async":
                    async_store.wait()  # the next round starts from an idle disk
                if step > 0:
                    times[name].append(seconds)
        async_store.close()
        sync_store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"state: {nbytes / 1e6:.0f} MB of tensors, median of {args.repeat} runs in {root.parent}")
    for name, label in [
        ("plain", "torch.save"),
        ("plain+fsync", "torch.save + fsync"),
        ("sync", "store.save (sync)"),
        ("async", "store.save (async, caller blocked)"),
    ]:
        seconds = median[name]
        print(f"  {label:36s} {seconds * 1000:8.1f} ms   {nbytes / 1e6 / seconds:7.0f} MB/s")
    sync = median["sync"]
    print(f"ratio sync save / torch.save          {sync / median['plain']:.3f}  (goal <= 1.15)")
    print(
        f"ratio sync save / torch.save + fsync  {sync / median['plain+fsync']:.3f}  (goal <= 1.10)"
    )
    print(f"ratio async blocked / sync save       {median['async'] / sync:.3f}  (goal <= 0.2)")


if __name__ == "__main__":
    main()
