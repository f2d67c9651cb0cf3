"""The ``helios`` command, run as a subprocess the way a user runs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from cli_runs import helios
from verify_jobs import Blobs, WellBehaved

from helios.trainer import Trainer
from helios.trainer._cli import main


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


def test_verify_resume_refuses_an_unknown_stop_kind(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["verify-resume", "--model", "verify_jobs:WellBehaved", "--data", "verify_jobs:Blobs"]
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--stops", "sigterm,nope"])
    assert stopped.value.code == 2
    assert (
        "--stops: got 'sigterm,nope'; expected one or more of sigterm, sigkill, epoch-end, "
        "last-step, separated by commas" in capsys.readouterr().err
    )


def test_verify_resume_says_when_no_stop_asked_for_applies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "verify-resume",
            "--model",
            "verify_jobs:WellBehaved",
            "--data",
            "verify_jobs:Blobs",
            "--steps",
            "4",  # 5 batches an epoch: no epoch ends before the last step
            "--stops",
            "epoch-end",
        ]
    )
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("helios verify-resume: error: none of the stops epoch-end applies")
    assert len(error.splitlines()) == 1
