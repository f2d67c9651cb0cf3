"""The ``helios`` command, run as a subprocess the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from resume_checks import SUPPORT
from verify_jobs import Blobs, WellBehaved

from helios.trainer import Trainer

HELIOS = [sys.executable, "-m", "helios.trainer"]


def helios(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(SUPPORT)}
    return subprocess.run(
        [*HELIOS, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environment,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-run")
    Trainer(
        folder,
        unit="iteration",
        total=10,
        checkpoint_every=2,
        keep_checkpoints=None,
        progress=False,
        tensorboard=False,
    ).fit(WellBehaved(), Blobs())
    return folder


@pytest.mark.parametrize("command", ["checkpoints", "export", "verify-resume"])
def test_every_subcommand_has_help(command: str) -> None:
    result = helios(command, "--help")
    assert result.returncode == 0
    assert "usage: helios " + command in result.stdout


def test_checkpoints_marks_a_corrupt_file_and_names_the_pick(run_dir: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "run"
    (damaged / "checkpoints").mkdir(parents=True)
    files = sorted((run_dir / "checkpoints").glob("*.pt"))
    for file in files:
        (damaged / "checkpoints" / file.name).write_bytes(file.read_bytes())
    newest = damaged / "checkpoints" / files[-1].name
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0xFF
    newest.write_bytes(bytes(data))
    result = helios("checkpoints", str(damaged))
    assert result.returncode == 1, result.stderr  # the newest is damaged
    assert files[-1].name in result.stderr
    lines = result.stdout.splitlines()
    bad = [line for line in lines if " CORRUPT  " in line]  # the status column of the table
    assert len(bad) == 1, result.stdout
    assert files[-1].name in bad[0]
    assert "SHA-256" in result.stdout  # and why
    good = [line for line in lines if " ok " in line]
    assert len(good) == len(files) - 1
    assert f"resume would pick: {files[-2].name}" in result.stdout


@pytest.mark.slow
def test_export_writes_an_onnx_file_onnxruntime_runs(run_dir: Path, tmp_path: Path) -> None:
    checkpoint = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    out = tmp_path / "net.onnx"
    result = helios(
        "export", str(checkpoint), "--model", "verify_jobs:WellBehaved", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "max" in result.stdout.lower()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"x": np.zeros((5, 4), dtype=np.float32)})
    assert logits.shape == (5, 2)


@pytest.mark.slow
def test_verify_resume_reports_identical_for_a_well_behaved_model() -> None:
    result = helios(
        "verify-resume",
        "--model",
        "verify_jobs:WellBehaved",
        "--data",
        "verify_jobs:Blobs",
        "--steps",
        "5",  # one epoch: three stops (mid-epoch, SIGKILL, at the last step), not four
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumable: identical" in result.stdout


@pytest.mark.slow
def test_verify_resume_names_the_tensor_of_an_unseeded_model() -> None:
    result = helios(
        "verify-resume",
        "--model",
        "verify_jobs:Unseeded",
        "--data",
        "verify_jobs:Blobs",
        "--steps",
        "5",  # one epoch: three stops (mid-epoch, SIGKILL, at the last step), not four
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "resumable: NO" in result.stdout
    assert "first differing tensor: model/networks/net/" in result.stdout
    assert "unseeded randomness" in result.stdout


@pytest.mark.slow
def test_verify_resume_catches_an_epoch_start_hook_drawing_from_an_unsaved_generator() -> None:
    result = helios(
        "verify-resume",
        "--model",
        "verify_jobs:EpochStartFromPrivateGenerator",
        "--data",
        "verify_jobs:Blobs",
        "--steps",
        "12",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "resumable: NO" in result.stdout
    # 5 batches an epoch: a stop at an epoch's end always starts an epoch in a fresh process
    assert "SIGTERM at an epoch's last batch (after step" in result.stdout
    exposed = next(line for line in result.stdout.splitlines() if "exposed by:" in line)
    assert "SIGTERM at an epoch's last batch" in exposed
    assert "first differing metric record: step" in result.stdout
    assert "on_training_epoch_start" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkpoints", "no/such/run"], "does not exist"),
        (["export", "no/such.pt", "--model", "verify_jobs:WellBehaved"], "does not exist"),
        (
            ["verify-resume", "--model", "no_such_module:X", "--data", "verify_jobs:Blobs"],
            "cannot import module 'no_such_module'",
        ),
        (
            ["verify-resume", "--model", "verify_jobs:Nope", "--data", "verify_jobs:Blobs"],
            "has no class 'Nope'",
        ),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    result = helios(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_corrupt_checkpoint_given_to_export_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoints" / "step-00000001.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    result = helios("export", str(bad), "--model", "verify_jobs:WellBehaved")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
