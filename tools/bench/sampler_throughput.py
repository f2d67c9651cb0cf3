"""Benchmark: Helios' random sampler against torch's ``RandomSampler``; memory at 10^9 samples.

Two figures, each against a baseline measured in the same run:

* time to iterate one random epoch of 10^7 indices, ``ResumableSampler`` / ``RandomSampler``
  (goal <= 1.1; best of a few alternating repeats, so a noisy neighbour hurts both alike);
* peak memory growth of a fresh process that creates a ``ResumableSampler`` over 10^9 samples and
  iterates 10^7 of its indices from the start and 10^6 resumed at 99.9 % of the epoch
  (goal < 100 MB), next to ``RandomSampler`` over only 10^7 (its 10^9 would need 8 GB for the
  permutation alone, plus a Python list of 10^9 ints).

Run:
    uv run python tools/bench/sampler_throughput.py [--size 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from torch.utils.data import RandomSampler

from helios.data import ResumableSampler


def time_epoch(sampler: object) -> float:
    started = time.perf_counter()
    for _ in sampler:  # type: ignore[attr-defined]
        pass
    return time.perf_counter() - started


def peak_growth_mb(kind: str, size: int) -> float:
    """Peak RSS growth (MB) of a fresh process doing ``kind``'s work over ``size`` samples.

    Read from ``/proc/self/status`` (Linux): ``ru_maxrss`` would carry the parent's peak over.
    """
    code = f"""
from itertools import islice
from pathlib import Path
import torch
from torch.utils.data import RandomSampler
from helios.data import ResumableSampler

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

list(islice(ResumableSampler(1000), 10))  # warm up both code paths before the baseline
list(islice(RandomSampler(range(1000)), 10))
before = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # restart the high-water mark from here
if {kind!r} == "helios":
    sampler = ResumableSampler({size}, shuffle=True, seed=0)
    for _ in islice(sampler, 10_000_000):
        pass
    sampler.set_position(0, {size} - {size} // 1000)
    for _ in islice(sampler, 1_000_000):
        pass
else:
    for _ in RandomSampler(range({size}), generator=torch.Generator().manual_seed(0)):
        pass
print(status("VmHWM") - before)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10**7)
    parser.add_argument("--big", type=int, default=10**9)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch_times, helios_times = [], []
    for repeat in range(args.repeats):
        baseline = RandomSampler(range(args.size), generator=torch.Generator().manual_seed(repeat))
        ours = ResumableSampler(args.size, shuffle=True, seed=repeat)
        torch_times.append(time_epoch(baseline))
        helios_times.append(time_epoch(ours))
    ratio = min(helios_times) / min(torch_times)
    print(f"one random epoch of {args.size:,} indices (best of {args.repeats}):")
    print(f"  torch RandomSampler     {min(torch_times):7.3f} s")
    print(f"  helios ResumableSampler {min(helios_times):7.3f} s")
    print(f"  ratio helios / torch    {ratio:7.3f}   (goal <= 1.1)")

    helios_mb = peak_growth_mb("helios", args.big)
    torch_mb = peak_growth_mb("torch", args.size)
    print("peak memory growth (fresh process, VmHWM high-water mark):")
    print(
        f"  helios over {args.big:,} samples (1.1e7 indices read) {helios_mb:8.1f} MB  (goal < 100)"
    )
    print(f"  torch over {args.size:,} samples (whole epoch)       {torch_mb:8.1f} MB")
    print(
        f"  torch over {args.big:,} would need >= {8 * args.big / 1e6:,.0f} MB for randperm alone"
    )
    print(json.dumps({"time_ratio": ratio, "helios_peak_mb": helios_mb, "torch_peak_mb": torch_mb}))


if __name__ == "__main__":
    main()
