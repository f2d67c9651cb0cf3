"""Helpers to compare two training runs bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from state_checks import assert_nested_equal

from helios.ckpt import DirectoryCheckpointStore

SUPPORT = Path(__file__).parent


def run_script(
    script: str, settings: dict[str, Any], *, expect: int = 0, timeout: float = 240
) -> str:
    """Run ``tests/support/<script>`` in a fresh process with JSON settings; return its output."""
    completed = subprocess.run(
        [sys.executable, str(SUPPORT / script), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == expect, (
        f"exit {completed.returncode}, expected {expect}:\n{output}"
    )
    return output


def final_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The newest good checkpoint of a run."""
    store = DirectoryCheckpointStore(Path(run_dir) / "checkpoints")
    try:
        return store.load()
    finally:
        store.close()


def metric_series(run_dir: str | Path, name: str) -> list[tuple[int, float]]:
    """(step, value) of one metric, in file order, from the run's metrics.jsonl."""
    series = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if name in record:
            series.append((int(record["step"]), float(record[name])))
    return series


MEASURED_PREFIXES = ("throughput/", "time/", "memory/")
"""Metrics that measure the machine (the PerformanceMonitor's): no two runs share them."""


def comparable_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records in file order, without the wall time and the measured metrics.

    What is left (steps, epochs, training, validation and test metrics) is what an interrupted
    and resumed run must log exactly as an uninterrupted one.
    """
    found = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("time", None)  # (records of older Helios versions have none)
        found.append({k: v for k, v in record.items() if not k.startswith(MEASURED_PREFIXES)})
    return found


def assert_same_training(run_a: Path, run_b: Path) -> None:
    """Final parameters, optimizer and scheduler state, position and loss series are identical."""
    a, b = final_checkpoint(run_a), final_checkpoint(run_b)
    assert_nested_equal(a["model"], b["model"], "model")
    assert_nested_equal(a["training_state"], b["training_state"], "training_state")
    assert_nested_equal(a["data"], b["data"], "data")
    assert_nested_equal(a["rng"], b["rng"], "rng")
    for metric in ("train/loss", "train/accuracy", "valid/loss"):
        series_a, series_b = metric_series(run_a, metric), metric_series(run_b, metric)
        assert series_a, f"no {metric} logged"
        assert series_a == series_b, metric
