"""Settings for the whole suite.

One intra-op thread per process (as torchrun sets for its ranks): the tests' networks are
tiny, and most tests start several processes (ranks, DataLoader workers, launchers) on a
machine with two cores, where OpenMP's extra threads only spin and contend. Set before any
test module imports torch; subprocesses inherit it. A value given in the environment wins.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


# The longest modules, roughly in seconds on two busy cores (measured 2026-12-02). Only
# the order of the run depends on this table: a stale entry costs minutes, never a result.
HEAVIEST = {
    "tests/trainer/test_fsdp.py": 250,
    "tests/trainer/test_stop_signals_ranks.py": 190,
    "tests/trainer/test_hsdp.py": 150,
    "tests/trainer/test_compile_resume.py": 120,
    "tests/trainer/test_exact_resume.py": 105,
    "tests/e2e/test_cli.py": 105,
    "tests/e2e/test_run_folder.py": 100,
    "tests/trainer/test_stop_signals_one_process.py": 80,
    "tests/e2e/test_verify_resume_well_behaved.py": 80,
    "tests/export/test_export.py": 75,
    "tests/trainer/test_compile.py": 70,
    "tests/docs/test_examples_resume.py": 46,
    "tests/trainer/test_ddp_iteration.py": 45,
    "tests/docs/test_examples.py": 40,
    "tests/trainer/test_ddp_epoch.py": 37,
    "tests/e2e/test_verify_resume_epoch_start.py": 35,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules with the most slow tests first, each module's tests in their order.

    pytest-xdist (``--dist loadscope``) hands whole modules to its workers in collection order;
    started last, the long modules (launchers, signals, ``verify-resume``) would leave one worker
    finishing them alone. Longest first, the short modules fill the gaps at the end. A stable
    sort: modules with as many slow tests keep their order, and a module's tests stay together.
    """
    slow: Counter[str] = Counter(
        _module(item) for item in items if item.get_closest_marker("slow") is not None
    )
    items.sort(key=lambda item: (-HEAVIEST.get(_module(item), 0), -slow[_module(item)]))


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]
