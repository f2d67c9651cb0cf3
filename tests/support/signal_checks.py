"""Stop a job as a scheduler does: ``os.killpg`` of its process group at a known step.

The job (signal_job.py) runs in a session of its own, as a batch job does. It writes
``waiting-<rank>`` files when it reaches the step to stop at; the signal is sent to the whole
process group then: the launcher (torchrun or Helios' auto-spawn), the ranks and their
DataLoader workers, as SLURM, Kubernetes or Ctrl-C would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helios.dist import free_port

SUPPORT = Path(__file__).parent
JOB = SUPPORT / "signal_job.py"
LIMIT = 300.0  # seconds for one job: torchrun starts slowly on two shared cores


def job_command(settings: dict[str, Any], launcher: str) -> list[str]:
    """The command line of one job: ``"python"`` (one process or auto-spawn) or ``"torchrun"``."""
    if launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            "--nproc-per-node=2",
            "--master-addr=127.0.0.1",
            f"--master-port={free_port()}",
            str(JOB),
            json.dumps(settings),
        ]
    return [sys.executable, str(JOB), json.dumps(settings)]


def job_environment() -> dict[str, str]:
    """This environment without any launcher's variables (the job is its own)."""
    launcher = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR"}
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in launcher | {"MASTER_PORT"} and not k.startswith("SLURM_")
    }
    environ["OMP_NUM_THREADS"] = "1"
    return environ


def _started(run_dir: Path) -> bool:
    return any(run_dir.glob("started-*"))


def run_job(
    settings: dict[str, Any],
    *,
    launcher: str = "python",
    stop: signal.Signals | None = None,
    ranks: int = 1,
    delay: float | None = None,
    limit: float = LIMIT,
) -> tuple[int, str]:
    """Run a job to its end, signalling its process group with ``stop`` on the way.

    The signal goes when every rank waits at ``settings["wait_at"]``, or, with ``delay``, that
    many seconds after training started (a random moment, for the stress script).

    Returns:
        The job's exit status and its output.
    """
    run_dir = Path(settings["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in [*run_dir.glob("waiting-*"), *run_dir.glob("started-*")]:
        old.unlink()
    job = subprocess.Popen(
        job_command(settings, launcher),
        env=job_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a scheduler's job
    )
    try:
        if stop is not None:
            deadline = time.monotonic() + limit
            if delay is None:
                ready = lambda: len(list(run_dir.glob("waiting-*"))) >= ranks  # noqa: E731
            else:
                ready = lambda: _started(run_dir)  # noqa: E731
            while not ready() and job.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if delay is not None:
                time.sleep(delay)
            if job.poll() is None:
                os.killpg(job.pid, stop)
        output = job.communicate(timeout=limit)[0]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    return job.returncode, output
