"""A scheduler's stop signal, sent to the whole process group while DataLoader workers run.

Each job runs in a session of its own and is stopped with ``os.killpg`` at a known step (see
tests/support/signal_checks.py), as SLURM, Kubernetes, torchrun and Ctrl-C stop jobs: the
launcher, every rank and every DataLoader worker receive the signal. The workers ignore it, each
rank counts the copy it gets directly and the copy its launcher relays as one request, finishes
the step, writes a checkpoint and leaves with status 75; the resumed run ends identical to a
straight one (every rank's RNG state included). tools/stress/signals.py repeats these cases.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from resume_checks import assert_same_training, final_checkpoint
from signal_checks import run_job

from helios.trainer import RESUMABLE_EXIT_CODE

# 12 batches an epoch in one process, 6 on two ranks; stopped after step 3, mid-epoch.
BASE: dict[str, Any] = {
    "unit": "iteration",
    "total": 8,
    "checkpoint_every": 4,
    "log_every": 1,
    "seed": 5,
    "workers": 2,
}
STOP_AT = 3


def job(run_dir: Path, **extra: Any) -> dict[str, Any]:
    return {"run_dir": str(run_dir), **BASE, **extra}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight-one")
    status, output = run_job(job(run_dir))
    assert status == 0, output
    return run_dir


@pytest.fixture(scope="module")
def straight_ddp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight-ddp")
    status, output = run_job(job(run_dir), launcher="torchrun")
    assert status == 0, output
    return run_dir


def assert_stopped_at_the_step(run_dir: Path, output: str) -> None:
    assert "TrainingAbortedError" not in output, output
    assert "killed by signal" not in output, output
    state = final_checkpoint(run_dir)["training_state"]
    assert state["step"] == STOP_AT, output


def assert_resumed_as_straight(straight: Path, resumed: Path) -> None:
    """Final state (every rank's RNG included) and every ``metrics.jsonl`` record identical."""
    assert_same_training(straight, resumed)
    records = (straight / "metrics.jsonl").read_text().splitlines()
    assert records == (resumed / "metrics.jsonl").read_text().splitlines()


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
