"""The JSON-lines backend (helios.log.MetricsFileLogger)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from helios.core import ConfigurationError, HeliosError, MetricLogger
from helios.log import MetricsFileLogger


def records(path: Path) -> list[dict[str, Any]]:
    """The records, each checked for its wall time, which is then dropped."""
    found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for record in found:
        assert abs(record.pop("time") - time.time()) < 600, record
    return found


def test_implements_the_metric_logger_protocol(tmp_path: Path) -> None:
    assert isinstance(MetricsFileLogger(tmp_path / "m.jsonl"), MetricLogger)


def test_one_json_line_per_call(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    logger = MetricsFileLogger(path)
    logger.log_scalars({"train/loss": 0.5, "lr": torch.tensor(0.25)}, 1)
    logger.log_text("note", "hello", 1)
    logger.log_scalars({"train/loss": 0.1}, 2)
    # Lines reach the file as they are logged, before any flush or close.
    assert records(path) == [
        {"step": 1, "train/loss": 0.5, "lr": 0.25},
        {"step": 1, "note": "hello"},
        {"step": 2, "train/loss": 0.1},
    ]
    logger.close()


def test_hyperparameters_go_to_a_file_beside_it(tmp_path: Path) -> None:
    logger = MetricsFileLogger(tmp_path / "metrics.jsonl")
    logger.log_hyperparameters({"lr": 0.001, "root": tmp_path}, {"accuracy": 0.5})
    logger.close()
    saved = json.loads((tmp_path / "metrics.hparams.json").read_text(encoding="utf-8"))
    assert saved == {
        "hyperparameters": {"lr": 0.001, "root": str(tmp_path)},
        "metrics": {"accuracy": 0.5},
    }


def run_until(path: Path, steps: range, *, resume_from: int | None, offset: float) -> None:
    logger = MetricsFileLogger(path)
    if resume_from is not None:
        logger.resume(resume_from)
    for step in steps:
        logger.log_scalars({"train/loss": step + offset}, step)
    # the process dies here: no close()


def test_stop_at_50_checkpoint_at_40_resume_to_80_logs_each_step_once(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    run_until(path, range(1, 51), resume_from=None, offset=0.0)
    run_until(path, range(41, 81), resume_from=40, offset=1000.0)

    pairs = [(record["step"], record["train/loss"]) for record in records(path)]
    assert [step for step, _ in pairs] == list(range(1, 81))
    assert pairs == [(s, s + (1000.0 if s > 40 else 0.0)) for s in range(1, 81)]


def test_resume_drops_a_line_torn_by_a_crash_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.jsonl"
    run_until(path, range(1, 6), resume_from=None, offset=0.0)
    with path.open("a", encoding="utf-8") as file:
        file.write('{"step": 6, "train/lo')  # the process was killed mid-line
    run_until(path, range(6, 8), resume_from=5, offset=0.0)
    assert [record["step"] for record in records(path)] == [1, 2, 3, 4, 5, 6, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_resume_before_anything_was_written_is_fine(tmp_path: Path) -> None:
    logger = MetricsFileLogger(tmp_path / "metrics.jsonl")
    logger.resume(10)
    logger.log_scalars({"loss": 1.0}, 11)
    logger.close()
    assert records(tmp_path / "metrics.jsonl") == [{"step": 11, "loss": 1.0}]


def test_a_disabled_logger_creates_no_file(tmp_path: Path) -> None:
    logger = MetricsFileLogger(tmp_path / "run" / "metrics.jsonl", enabled=False)
    logger.log_scalars({"loss": 1.0}, 1)
    logger.log_text("t", "x", 1)
    logger.log_hyperparameters({"lr": 0.1})
    logger.resume(0)
    logger.flush()
    logger.close()
    assert not (tmp_path / "run").exists()


def test_mistakes_are_reported(tmp_path: Path) -> None:
    logger = MetricsFileLogger(tmp_path / "metrics.jsonl")
    with pytest.raises(ConfigurationError, match="may not be called 'step'"):
        logger.log_scalars({"step": 1.0}, 1)
    with pytest.raises(ConfigurationError, match="step must be an int >= 0, got -3"):
        logger.log_scalars({"loss": 1.0}, -3)
    logger.close()
    with pytest.raises(HeliosError, match="after close"):
        logger.log_scalars({"loss": 1.0}, 1)


def test_non_finite_values_are_null_and_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "metrics.jsonl"
    logger = MetricsFileLogger(path)
    logger.log_scalars(
        {"train/loss": float("nan"), "grad": torch.tensor(float("inf")), "epoch": 2}, 3
    )
    logger.close()
    line = path.read_text(encoding="utf-8")
    record = json.loads(line, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))
    assert record["train/loss"] is None and record["grad"] is None
    assert record["epoch"] == 2 and isinstance(record["epoch"], int)
    assert "'train/loss' is nan at step 3" in caplog.text
    assert "'grad' is inf at step 3" in caplog.text
