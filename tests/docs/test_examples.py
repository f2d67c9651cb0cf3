"""The example files of docs/examples run, and do what the guides say they do."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from docs_blocks import DOCS
from example_runs import EXAMPLES, run_example
from state_checks import assert_nested_equal, nested_difference

from helios.ckpt import DirectoryCheckpointStore
from helios.core import Model
from helios.trainer import Callback, Trainer, TrainerState
from helios.trainer._cli import main as helios_command


def test_every_example_file_is_tested_here() -> None:
    source = "".join(
        path.read_text(encoding="utf-8") for path in Path(__file__).parent.glob("test_examples*.py")
    )
    for example in EXAMPLES.iterdir():
        # digits.py: the getting started; digits.toml: tests/e2e/test_config_digits.py
        if example.is_file() and example.name not in ("digits.py", "digits.toml"):
            assert f'"{example.name}"' in source or f'"{example.stem}"' in source, example.name


# ---- the resumable sampler in a loop of your own ------------------------------------------


# ---- checkpoints ------------------------------------------------------------------------


def test_checkpoint_recovery_falls_back_and_refuses_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "recovery"
    output = run_example("checkpoint_recovery.py", str(folder))
    for line in (
        "kept: ['step-00000100.pt', 'step-00000200.pt', 'step-00000300.pt']",
        "best: step-00000100.pt",
        "latest good: step-00000200.pt",
        "loaded weights of step 200",
        f"warning: checkpoint {folder}/step-00000300.pt is corrupt",
        "asking for the damaged file by name: CheckpointError",
        "an object that would run code on loading: refused by save, CheckpointError",
    ):
        assert line in output, line
    assert "this line must never be printed" not in output
    assert sorted(p.name for p in folder.iterdir()) == [
        "step-00000100.pt",
        "step-00000200.pt",
        "step-00000300.pt",
    ]

    # The guide's `helios checkpoints` listing of that folder.
    assert helios_command(["checkpoints", str(folder)]) == 1  # the newest is damaged
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == f"checkpoints in {folder}:"
    rows = {line.split()[0]: line.split() for line in listing[2:5]}
    assert rows["100"][3:5] == ["ok", "step-00000100.pt"]
    assert rows["300"][3:5] == ["CORRUPT", "step-00000300.pt"]
    assert listing[-1] == "resume would pick: step-00000200.pt"
    assert helios_command(["checkpoints", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- ONNX export ------------------------------------------------------------------------


@pytest.mark.slow
def test_export_example_writes_a_checked_file_and_reports_failures(tmp_path: Path) -> None:
    output = run_example("export_onnx.py", str(tmp_path))
    assert f"ONNX export: {tmp_path / 'net.onnx'}" in output
    assert "onnxruntime parity at batch sizes 1, 7" in output
    assert "batch of 5: (5, 10)" in output
    assert "ExportError: Could not export Branchy to ONNX" in output
    assert "branchy.onnx written: False" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]  # no temporary left


# ---- logging ----------------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_example_reads_both_files_and_uses_its_own_logger(tmp_path: Path) -> None:
    output = run_example("read_metrics.py", str(tmp_path))
    assert "tensorboard: train/loss [4, 8, 12, 16]" in output
    assert "tensorboard: valid/loss [8, 16]" in output
    assert "tensorboard: lr/optimizer [4, 8, 12, 16]" in output
    assert "jsonl: {'step': 8, 'valid/loss':" in output
    assert "resuming after step 0" in output
    assert "step 4: lr/optimizer=0.1000, train/loss=" in output
    own = tmp_path / "own"
    assert not (own / "metrics.jsonl").exists() and not (own / "tensorboard").exists()


# ---- exact resume: the pitfalls the guide names ------------------------------------------


@pytest.fixture(scope="module")
def pitfalls() -> Iterator[ModuleType]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield importlib.import_module("resume_pitfalls")
    finally:
        sys.path.remove(str(EXAMPLES))


def final_state(run_dir: Path) -> dict[str, Any]:
    with DirectoryCheckpointStore(run_dir / "checkpoints", keep_last=None) as store:
        return store.load()["model"]


class SigtermAt(Callback):
    """Send SIGTERM to this process after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        if state.training.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def train(pitfalls: ModuleType, run_dir: Path, model: Model, stop_at: int | None = None) -> None:
    """The settings helios verify-resume uses, in this process; SIGTERM at ``stop_at``."""
    result = Trainer(
        run_dir,
        unit="iteration",
        total=12,
        checkpoint_every=3,
        log_every=1,
        devices="cpu",
        tensorboard=False,
        progress=False,
        exit_on_signal=False,
        callbacks=[SigtermAt(stop_at)] if stop_at is not None else [],
    ).fit(model, pitfalls.Points())
    assert result.interrupted == (stop_at is not None)


def straight_and_resumed(
    pitfalls: ModuleType, root: Path, model_class: type[Model]
) -> tuple[dict[str, Any], dict[str, Any]]:
    train(pitfalls, root / "straight", model_class())
    train(pitfalls, root / "resumed", model_class(), stop_at=5)  # off the cadence and epochs
    train(pitfalls, root / "resumed", model_class())
    return final_state(root / "straight"), final_state(root / "resumed")


def test_the_resumable_model_resumes_bitwise(pitfalls: ModuleType, tmp_path: Path) -> None:
    straight, resumed = straight_and_resumed(pitfalls, tmp_path, pitfalls.Regression)
    assert_nested_equal(straight, resumed)
    assert straight["extra"]["warmup"]["batches"] == 12


def test_a_counter_outside_the_checkpoint_breaks_resume(
    pitfalls: ModuleType, tmp_path: Path
) -> None:
    straight, resumed = straight_and_resumed(pitfalls, tmp_path, pitfalls.HiddenCounter)
    assert nested_difference(straight["networks"], resumed["networks"]) is not None
    train(pitfalls, tmp_path / "again", pitfalls.HiddenCounter())
    assert_nested_equal(straight, final_state(tmp_path / "again"))  # reproducible, not resumable


def test_an_unseeded_generator_breaks_even_two_straight_runs(
    pitfalls: ModuleType, tmp_path: Path
) -> None:
    train(pitfalls, tmp_path / "one", pitfalls.UnseededNoise())
    train(pitfalls, tmp_path / "two", pitfalls.UnseededNoise())
    assert (
        nested_difference(final_state(tmp_path / "one"), final_state(tmp_path / "two")) is not None
    )


# ---- SLURM ------------------------------------------------------------------------------


def test_slurm_script_is_valid_bash_and_runs_an_existing_example() -> None:
    script = EXAMPLES / "slurm_digits.sbatch"
    bash = shutil.which("bash")
    assert bash is not None
    subprocess.run([bash, "-n", str(script)], check=True, timeout=30)
    text = script.read_text(encoding="utf-8")
    commands = re.findall(r"^srun python (\S+)", text, flags=re.MULTILINE)
    assert commands and all((DOCS.parent / path).is_file() for path in commands)
    assert '"$status" -eq 75' in text  # RESUMABLE_EXIT_CODE
    assert "#SBATCH --signal=USR1@" in text  # a signal the trainer stops on
