"""Settings for the whole suite.

One intra-op thread per process (as torchrun sets for its ranks): the tests' networks are
tiny, and most tests start several processes (ranks, DataLoader workers, launchers) on a
machine with two cores, where OpenMP's extra threads only spin and contend. Set before any
test module imports torch; subprocesses inherit it. A value given in the environment wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
