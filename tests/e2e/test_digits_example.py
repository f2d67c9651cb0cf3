"""The README's main command: the digits example trains, tests and exports.

Run again, it does not start over.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_digits_trains_to_90_percent_then_reports_the_run_complete(tmp_path: Path) -> None:
    run_dir = tmp_path / "digits"
    first = run_example(run_dir)
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

    fresh = run_example(run_dir, "--fresh")
    assert "already complete" not in fresh
