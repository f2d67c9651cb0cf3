"""A scheduler's stop signal, sent to the whole process group while DataLoader workers run.

Each job runs in a session of its own and is stopped with ``os.killpg`` at a known step (see
tests/support/signal_checks.py), as SLURM, Kubernetes, torchrun and Ctrl-C stop jobs: the
launcher, every rank and every DataLoader worker receive the signal. The workers ignore it, each
rank counts the copy it gets directly and the copy its launcher relays as one request, finishes
the step, writes a checkpoint and leaves with status 75; the resumed run ends identical to a
straight one (every rank's RNG state included). tools/stress/signals.py repeats these cases.

This module: one process with loader workers (plain and persistent).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from signal_checks import run_job
from stop_signal_cases import STOP_AT, assert_resumed_as_straight, assert_stopped_at_the_step, job

from helios.trainer import RESUMABLE_EXIT_CODE


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight-one")
    status, output = run_job(job(run_dir))
    assert status == 0, output
    return run_dir


# Each signal with each kind of workers: 2 workers, and 2 persistent workers.
@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("persistent", [False, True], ids=["workers", "persistent-workers"])
def test_one_process_with_workers(
    straight: Path, tmp_path: Path, stop: signal.Signals, persistent: bool
) -> None:
    settings = job(tmp_path, persistent_workers=persistent)
    status, output = run_job({**settings, "wait_at": STOP_AT}, stop=stop)
    assert status == RESUMABLE_EXIT_CODE, output
    assert_stopped_at_the_step(tmp_path, output)
    status, output = run_job(settings)
    assert status == 0, output
    assert_resumed_as_straight(straight, tmp_path)
