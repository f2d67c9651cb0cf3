"""Benchmark: time from loading a saved state to the first batch, early vs. late in an epoch.

An epoch of 1,000,000 samples whose ``__getitem__`` costs about 1 ms (a sleep, like reading a
file). A fresh ``ResumableDataLoader`` (2 workers, batch 32) loads a state saved at 0 %, 50 % and
99.9 % of the epoch and the time to its first batch is measured, each point several times in
alternation (median). The baseline is the 0 % resume of the same run; the figure is the ratio
99.9 % / 0 % (goal <= 1.1: resuming costs the same wherever the run stopped). For scale, a resume
that replays the epoch to skip the consumed samples would fetch ``0.999 * 10^6`` samples first.

Run:
    uv run python tools/bench/resume_latency.py [--size 1000000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.data import Dataset

from helios.data import ResumableDataLoader, ResumableSampler


class SlowDataset(Dataset[torch.Tensor]):
    """``size`` samples, each taking about 1 ms to fetch."""

    def __init__(self, size: int, cost: float) -> None:
        """``size`` samples costing ``cost`` seconds each."""
        self.size = size
        self.cost = cost

    def __len__(self) -> int:
        """The number of samples."""
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        """Wait ``cost`` seconds, then return the index as a small tensor."""
        time.sleep(self.cost)
        return torch.full((8,), float(index))


def time_to_first_batch(
    dataset: SlowDataset, fraction: float, *, batch_size: int, num_workers: int
) -> float:
    size = len(dataset)
    state = ResumableSampler(size, shuffle=True, seed=1).state_dict()
    state.update(epoch=3, consumed=round(fraction * size))
    started = time.perf_counter()
    sampler = ResumableSampler(size, shuffle=True, seed=1)
    loader = ResumableDataLoader(dataset, sampler, batch_size=batch_size, num_workers=num_workers)
    loader.load_state_dict(state)
    batches = iter(loader)
    batch = next(batches)
    elapsed = time.perf_counter() - started
    del batches  # shutting the workers down is not part of resuming
    assert batch.shape == (batch_size, 8)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--cost", type=float, default=0.001, help="seconds per __getitem__")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    dataset = SlowDataset(args.size, args.cost)
    fractions = (0.0, 0.5, 0.999)
    times: dict[float, list[float]] = {f: [] for f in fractions}
    time_to_first_batch(dataset, 0.0, batch_size=args.batch_size, num_workers=args.num_workers)
    for _ in range(args.repeats):
        for fraction in fractions:
            times[fraction].append(
                time_to_first_batch(
                    dataset, fraction, batch_size=args.batch_size, num_workers=args.num_workers
                )
            )
    medians = {f: statistics.median(t) for f, t in times.items()}
    print(
        f"resume to first batch: {args.size:,} samples, {args.cost * 1e3:.1f} ms each, "
        f"batch {args.batch_size}, {args.num_workers} workers, median of {args.repeats}"
    )
    for fraction, median in medians.items():
        print(f"  at {fraction:6.1%} of the epoch  {median * 1e3:8.1f} ms")
    ratio = medians[0.999] / medians[0.0]
    print(f"  ratio 99.9 % / 0 %        {ratio:8.3f}   (goal <= 1.1)")
    replay = 0.999 * args.size * args.cost / max(args.num_workers, 1)
    print(f"  (replaying the epoch to skip ahead would take about {replay:,.0f} s)")
    print(json.dumps({"ratio": ratio, "median_ms": {str(f): m * 1e3 for f, m in medians.items()}}))


if __name__ == "__main__":
    main()
