"""A run folder that misuse cannot corrupt: a lock, honest "best", rollbacks, damaged files.

Real processes and real files: two ``fit`` processes on one folder, checkpoints damaged in
every way (through ``helios checkpoints`` and ``fit``), a rollback to an older checkpoint, a
model whose weights diverge between validations, a module planted in the current folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from damage import DAMAGE, refused
from resume_checks import SUPPORT
from run_folder_jobs import BlobsWithValidation, DivergesAt, Validated

from helios.ckpt import DirectoryCheckpointStore
from helios.core import CheckpointError
from helios.trainer import Trainer
from helios.trainer._cli import main
from helios.trainer._lock import lock_run_folder

QUIET: dict[str, Any] = {"progress": False, "tensorboard": False, "devices": "cpu"}


def train_steps(run_dir: Path) -> list[int]:
    """The steps of the training records of metrics.jsonl, in file order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "train/loss" in json.loads(line)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with checkpoints at steps 2 and 4."""
    run_dir = tmp_path_factory.mktemp("trained")
    trainer = Trainer(
        run_dir, unit="iteration", total=4, checkpoint_every=2, keep_checkpoints=None, **QUIET
    )
    trainer.fit(Validated(), BlobsWithValidation())
    return run_dir


def copy_run(trained: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir, ignore=shutil.ignore_patterns(".helios.lock"))
    return run_dir


# ---- 1: one process per run folder ----------------------------------------------------------


def start_fit(run_dir: Path, **settings: Any) -> subprocess.Popen[str]:
    settings = {"run_dir": str(run_dir), "unit": "iteration", "log_every": 1, **settings}
    return subprocess.Popen(
        [sys.executable, str(SUPPORT / "run_folder_jobs.py"), json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_second_fit_of_the_same_folder_is_refused_and_the_first_finishes(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    release = tmp_path / "release"
    first = start_fit(run_dir, total=12, checkpoint_every=2, release=str(release))
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists() or not train_steps(run_dir):
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = start_fit(run_dir, total=12, checkpoint_every=2)
        output, _ = second.communicate(timeout=120)
        assert second.returncode != 0
        assert "RunFolderLockedError" in output
        assert f"is in use by fit in process {first.pid} on host" in output
        assert first.poll() is None  # refused before it touched anything
    finally:
        release.touch()
        output, _ = first.communicate(timeout=180)
    assert first.returncode == 0, output
    assert train_steps(run_dir) == list(range(1, 13))  # every step once, in order
    # the lock ended with the process: the folder is free again
    Trainer(run_dir, unit="iteration", total=12, **QUIET).fit(Validated(), BlobsWithValidation())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_killed_fit_leaves_no_stale_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start_fit(run_dir, total=200, checkpoint_every=2, delay=0.2)
    deadline = time.monotonic() + 100
    while not (run_dir / "metrics.jsonl").exists() or not train_steps(run_dir):
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.kill()
    first.communicate()
    result = Trainer(run_dir, unit="iteration", total=6, checkpoint_every=2, **QUIET).fit(
        Validated(), BlobsWithValidation()
    )
    assert result.complete


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_under_torchrun_every_rank_is_refused_at_once_when_the_folder_is_held(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    settings = {"run_dir": str(run_dir), "unit": "iteration", "total": 4}
    with lock_run_folder(run_dir, "fit"):  # this test's process holds the folder
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node=2",
                str(SUPPORT / "run_folder_jobs.py"),
                json.dumps(settings),
            ],
            capture_output=True,
            text=True,
            timeout=200,
            check=False,
        )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # rank 0 tried the lock and told rank 1: neither waits for the other until a timeout
    assert output.count(f"is in use by fit in process {os.getpid()}") >= 2, output
    assert time.monotonic() - started < 150
    assert not (run_dir / "metrics.jsonl").exists()


# ---- 2: "best" is a checkpoint whose own weights were validated ------------------------------


def test_best_is_never_a_checkpoint_whose_weights_were_not_validated(tmp_path: Path) -> None:
    # validation every 4 steps, checkpoints every 2: step 10 has NaN weights, unvalidated
    trainer = Trainer(
        tmp_path,
        unit="iteration",
        total=12,
        valid_every=4,
        checkpoint_every=2,
        keep_checkpoints=1,
        keep_best=1,
        log_every=1,
        non_finite="ignore",  # train on through the NaN: "best" must still skip those weights
        **QUIET,
    )
    trainer.fit(DivergesAt(10), BlobsWithValidation())
    store = DirectoryCheckpointStore(tmp_path / "checkpoints", best_metric="loss")
    for info in store.list():
        assert (info.step % 4 == 0) == bool(info.metrics), info  # metrics only when validated
    best = store.best()
    assert best is not None
    assert best.step in (4, 8)
    assert math.isfinite(best.metrics["loss"])
    metrics = trainer.test(Validated(), BlobsWithValidation(), checkpoint="best")
    assert math.isfinite(metrics["loss"])


# ---- 3: going back to an older checkpoint ----------------------------------------------------


def test_a_rollback_moves_the_newer_checkpoints_aside_and_auto_resume_follows_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings: dict[str, Any] = {
        "unit": "iteration",
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "log_every": 1,
        **QUIET,
    }
    Trainer(tmp_path, total=20, **settings).fit(Validated(), BlobsWithValidation())
    folder = tmp_path / "checkpoints"
    older = folder / "step-00000018.pt"
    Trainer(tmp_path, total=19, resume=older, **settings).fit(Validated(), BlobsWithValidation())
    logged = capfd.readouterr().err
    (aside,) = folder.glob("abandoned-*-after-step-00000018")
    assert sorted(p.name for p in aside.iterdir()) == ["metrics.jsonl", "step-00000020.pt"]
    assert str(aside) in logged
    assert "nothing was deleted" in logged

    result = Trainer(tmp_path, total=22, **settings).fit(Validated(), BlobsWithValidation())
    assert result.resumed_from is not None
    assert result.resumed_from.name == "step-00000019.pt"
    assert result.state.step == 22
    assert train_steps(tmp_path) == list(range(1, 23))  # no gap, no step twice


# ---- 4, 5: damaged checkpoints and odd entries -------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", DAMAGE, ids=str)
def test_helios_checkpoints_gives_every_entry_its_verdict(
    trained: Path, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt, verdict, reason = DAMAGE[damage]
    run_dir = copy_run(trained, tmp_path)
    corrupt(run_dir / "checkpoints" / "step-00000004.pt")
    (run_dir / "checkpoints" / ".step-00000006.pt.0123abcd.tmp").write_bytes(b"x" * 1234)

    assert main(["checkpoints", str(run_dir)]) == 1  # the newest is damaged
    out, err = capsys.readouterr()
    line = next(line for line in out.splitlines() if "step-00000004.pt" in line)  # its row
    assert f" {verdict} " in line
    assert reason in out
    good = next(line for line in out.splitlines() if "step-00000002.pt" in line)
    assert " ok " in good
    assert "1,234" in out
    assert "temporary" in out
    assert "resume would pick: step-00000002.pt" in out
    assert "step-00000004.pt" in err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", DAMAGE, ids=str)
def test_fit_refuses_to_start_over_when_no_checkpoint_is_usable(
    trained: Path, tmp_path: Path, damage: str
) -> None:
    corrupt, verdict, _ = DAMAGE[damage]
    run_dir = copy_run(trained, tmp_path)
    corrupt(run_dir / "checkpoints" / "step-00000004.pt")
    (run_dir / "checkpoints" / "step-00000002.pt").unlink()  # the only entry is the damaged one
    metrics = (run_dir / "metrics.jsonl").read_bytes()

    trainer = Trainer(run_dir, unit="iteration", total=8, **QUIET)
    with pytest.raises(CheckpointError) as caught:
        trainer.fit(Validated(), BlobsWithValidation())
    message = str(caught.value)
    assert "none usable" in message
    assert f"step-00000004.pt: {verdict}" in message
    assert "To start fresh, move" in message
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics  # nothing truncated


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["fifo", "directory", "symlink to /dev/zero", "zeroed"])
def test_fit_resumes_from_the_good_one_past_a_damaged_newest(
    trained: Path, tmp_path: Path, damage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    corrupt, _, reason = DAMAGE[damage]
    run_dir = copy_run(trained, tmp_path)
    corrupt(run_dir / "checkpoints" / "step-00000004.pt")
    result = Trainer(run_dir, unit="iteration", total=6, checkpoint_every=2, **QUIET).fit(
        Validated(), BlobsWithValidation()
    )
    logged = capfd.readouterr().err
    assert "step-00000004.pt" in logged
    assert reason in logged
    assert result.resumed_from is not None
    assert result.resumed_from.name == "step-00000002.pt"
    assert result.state.step == 6


def test_a_refused_newest_checkpoint_is_listed_and_stops_fit_with_a_way_out(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(trained, tmp_path)
    refused(run_dir / "checkpoints" / "step-00000004.pt")
    assert main(["checkpoints", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert " REFUSED " in next(line for line in out.splitlines() if "step-00000004.pt" in line)
    with pytest.raises(CheckpointError, match=r"move step-00000004.pt out of .*checkpoints"):
        Trainer(run_dir, unit="iteration", total=6, **QUIET).fit(Validated(), BlobsWithValidation())
    assert not (run_dir / "checkpoints" / "code-ran").exists()


# ---- 6: temporary files of killed saves --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_crash_loop_of_fits_killed_in_their_first_save_leaves_at_most_one_temporary_file(
    tmp_path: Path,
) -> None:
    # Two fits are the loop at the trainer's level: the second removes the first's temporary
    # file before it writes its own. The store-level loop of five kills is
    # tests/ckpt/test_odd_entries.py::test_a_crash_loop_in_the_first_save_leaves_at_most_one_...
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    previous: set[str] = set()
    for _ in range(2):
        child = start_fit(run_dir, total=4, checkpoint_every=1, ballast=16_000_000)  # 64 MB
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and child.poll() is None:
                temporaries = list(folder.glob(".step-*.tmp")) if folder.is_dir() else []
                fresh = [p for p in temporaries if p.name not in previous]
                # the previous run's file is gone (removed on open); this run's is being written
                if len(temporaries) == 1 and fresh and fresh[0].stat().st_size > 1_000_000:
                    break
                time.sleep(0.005)
        finally:
            child.kill()
            output, _ = child.communicate()
        assert child.returncode == -9, output
        temporaries = list(folder.glob(".step-*.tmp"))
        assert len(temporaries) <= 1
        previous = {p.name for p in temporaries}
    assert not list(folder.glob("step-*.pt"))  # every run died in its first save
    result = Trainer(run_dir, unit="iteration", total=2, checkpoint_every=1, **QUIET).fit(
        Validated(), BlobsWithValidation()
    )
    assert result.state.step == 2
    assert not list(folder.glob(".step-*.tmp"))


def test_fit_removes_temporary_files_left_by_killed_saves(trained: Path, tmp_path: Path) -> None:
    run_dir = copy_run(trained, tmp_path)
    for index in range(3):
        (run_dir / "checkpoints" / f".step-00000006.pt.{index:08x}.tmp").write_bytes(b"x" * 99)
    Trainer(run_dir, unit="iteration", total=4, **QUIET).fit(Validated(), BlobsWithValidation())
    assert not list((run_dir / "checkpoints").glob("*.tmp"))


# ---- 8: the current folder never shadows an installed module ---------------------------------


@pytest.mark.slow
def test_a_module_planted_in_the_current_folder_is_never_run(trained: Path, tmp_path: Path) -> None:
    here = tmp_path / "cwd"
    here.mkdir()
    marker = tmp_path / "planted-code-ran"
    (here / "onnxruntime.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (here / "my_models.py").write_text("from run_folder_jobs import Validated as Mine\n")
    checkpoint = trained / "checkpoints" / "step-00000004.pt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "helios.trainer",
            "export",
            str(checkpoint),
            "--model",
            "my_models:Mine",  # the user's own module in the current folder still loads
            "--out",
            str(tmp_path / "net.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=here,
        env={**os.environ, "PYTHONPATH": str(SUPPORT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not marker.exists()
    assert (tmp_path / "net.onnx").is_file()
