"""Loader workers end when their main process is killed, under the ``forkserver`` start method.

Helios' workers ignore stop signals (helios.data._worker_signals), so the only thing that ends
a worker whose main process died without shutting it down is torch's watchdog, which watches the
worker's parent. Under ``forkserver`` (the start method Helios' auto-spawned ranks give their
workers) that parent is the fork server, which every worker kept alive by holding its "alive"
pipe: the workers outlived the killed process forever, and a launcher reading the job's output
hung (seen with a DDP rank terminated after the other rank failed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

JOB = textwrap.dedent(
    """
    import multiprocessing, os, signal
    import torch
    from torch.utils.data import TensorDataset
    from helios.data._worker_signals import StopSafeDataLoader

    context = multiprocessing.get_context("forkserver")
    multiprocessing.set_forkserver_preload(["torch"])
    loader = StopSafeDataLoader(
        TensorDataset(torch.arange(64.0)), batch_size=4, num_workers=2,
        persistent_workers=True, multiprocessing_context=context,
    )
    batches = iter(loader)
    next(batches)
    print(" ".join(str(worker.pid) for worker in batches._workers), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no shutdown of the workers
    """
)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow  # waits for torch's watchdog (5 s)
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_forkserver_workers_end_after_their_main_process_is_killed(tmp_path: Path) -> None:
    job = subprocess.Popen(
        [sys.executable, "-c", JOB], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert job.stdout is not None
    workers = [int(pid) for pid in job.stdout.readline().split()]
    assert len(workers) == 2
    assert job.wait(timeout=60) == -signal.SIGKILL
    deadline = time.monotonic() + 30  # torch's watchdog looks every 5 s
    try:
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(running(pid) for pid in workers), "the workers outlived their process"
        assert job.stdout.read() == ""  # every copy of the job's output pipe is closed: no hang
    finally:
        for pid in workers:  # never leave them behind, even when the test fails
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        job.stdout.close()
