"""The README's main command: the digits example trains, tests and exports.

With ``--fresh`` it deletes the run folder first; run again, it does not start over.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "digits.py"


def run_example(run_dir: Path, *extra: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE), "--run-dir", str(run_dir), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout + completed.stderr


@pytest.mark.slow
def test_digits_starts_fresh_trains_to_90_percent_then_reports_the_run_complete(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "digits"
    # Left from an earlier run: a checkpoint no plain run gets past ("none usable"), so the
    # first run only trains because --fresh deleted the folder first.
    (run_dir / "checkpoints").mkdir(parents=True)
    stale = run_dir / "checkpoints" / "step-00000999.pt"
    stale.write_bytes(b"an unusable checkpoint of an earlier run")
    first = run_example(run_dir, "--fresh")
    assert not stale.exists()
    assert "already complete" not in first
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", first).group(1))  # type: ignore[union-attr]
    assert accuracy >= 0.90
    assert (run_dir / "onnx" / "Classifier.onnx").stat().st_size > 0
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    checkpoints = sorted((run_dir / "checkpoints").glob("*.pt"))
    assert checkpoints

    second = run_example(run_dir)
    assert "already complete" in second
    assert sorted((run_dir / "checkpoints").glob("*.pt")) == checkpoints
    assert re.search(r"test accuracy: ([0-9.]+)", second).group(1) == str(  # type: ignore[union-attr]
        re.search(r"test accuracy: ([0-9.]+)", first).group(1)  # type: ignore[union-attr]
    )
