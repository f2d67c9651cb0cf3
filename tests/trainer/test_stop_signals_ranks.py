"""A scheduler's stop signal, sent to the whole process group while DataLoader workers run.

Each job runs in a session of its own and is stopped with ``os.killpg`` at a known step (see
tests/support/signal_checks.py), as SLURM, Kubernetes, torchrun and Ctrl-C stop jobs: the
launcher, every rank and every DataLoader worker receive the signal. The workers ignore it, each
rank counts the copy it gets directly and the copy its launcher relays as one request, finishes
the step, writes a checkpoint and leaves with status 75; the resumed run ends identical to a
straight one (every rank's RNG state included). tools/stress/signals.py repeats these cases.

This module: two ranks with loader workers, started by auto-spawn and by torchrun.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from signal_checks import run_job
from stop_signal_cases import STOP_AT, assert_resumed_as_straight, assert_stopped_at_the_step, job

from helios.trainer import RESUMABLE_EXIT_CODE


@pytest.fixture(scope="module")
def straight_ddp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight-ddp")
    status, output = run_job(job(run_dir), launcher="torchrun")
    assert status == 0, output
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_auto_spawn_two_ranks_with_workers(
    straight_ddp: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """The launcher relays the signal the ranks already got: it still counts once.

    The resumed half runs under torchrun (a checkpoint does not depend on the launcher; torchrun
    starts in a third of the time), and is compared with the straight torchrun run.
    """
    settings = job(tmp_path, devices=2)
    status, output = run_job({**settings, "wait_at": STOP_AT}, stop=stop, ranks=2)
    assert status == RESUMABLE_EXIT_CODE, output
    assert_stopped_at_the_step(tmp_path, output)
    status, output = run_job(job(tmp_path), launcher="torchrun")
    assert status == 0, output
    assert_resumed_as_straight(straight_ddp, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_torchrun_two_ranks_with_workers(
    straight_ddp: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """Each rank exits 75; torchrun itself, signalled, exits 1 (its SignalException)."""
    status, output = run_job(
        {**job(tmp_path), "wait_at": STOP_AT}, stop=stop, ranks=2, launcher="torchrun"
    )
    assert status == 1, output
    assert f"got signal: {int(stop)}" in output, output
    for rank in (0, 1):
        assert (tmp_path / f"exit-{rank}").read_text() == str(RESUMABLE_EXIT_CODE), output
    assert_stopped_at_the_step(tmp_path, output)
    status, output = run_job(job(tmp_path), launcher="torchrun")
    assert status == 0, output
    assert_resumed_as_straight(straight_ddp, tmp_path)
