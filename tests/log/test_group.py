"""MetricLoggerGroup and reduce_metrics in one process (two real ranks: test_distributed.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_context import FakeContext

from helios.core import ConfigurationError, DistributedContext, MetricLogger
from helios.log import MetricLoggerGroup, MetricsFileLogger, TensorBoardLogger, reduce_metrics


def without_time(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl record without its wall time (checked to be there)."""
    assert isinstance(record.pop("time"), float)
    return record


def test_the_test_context_and_the_group_conform(tmp_path: Path) -> None:
    assert isinstance(FakeContext(0, []), DistributedContext)
    assert isinstance(MetricLoggerGroup([TensorBoardLogger(tmp_path)]), MetricLogger)


def test_reduce_metrics_without_a_context_gives_floats() -> None:
    reduced = reduce_metrics({"b": torch.tensor(2.5), "a": 1})
    assert reduced == {"a": 1.0, "b": 2.5}
    assert all(type(value) is float for value in reduced.values())


def test_reduce_metrics_averages_in_sorted_name_order() -> None:
    context = FakeContext(0, [{"loss": 3.0, "acc": 0.5}])
    assert reduce_metrics({"loss": 1.0, "acc": torch.tensor(1.0)}, context) == {
        "acc": 0.75,
        "loss": 2.0,
    }
    assert context.reductions == [["acc", "loss"]]


def test_reduce_metrics_in_a_group_of_one_does_not_communicate() -> None:
    context = FakeContext(0, [])
    assert reduce_metrics({"loss": 1.0}, context) == {"loss": 1.0}
    assert context.reductions == []


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"loss": torch.ones(2)}, r"'loss' must be a real number or a one-element tensor"),
        ({"loss": "low"}, r"'loss' must be a real number"),
        ({3: 1.0}, "metric names must be non-empty strings, got 3"),
    ],
)
def test_reduce_metrics_rejects_what_is_not_a_scalar(metrics: dict[Any, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        reduce_metrics(metrics, FakeContext(0, [{"loss": 1.0}]))


def make_group(folder: Path, context: FakeContext) -> MetricLoggerGroup:
    main = context.is_main_process
    return MetricLoggerGroup(
        [
            TensorBoardLogger(folder / "tb", enabled=main),
            MetricsFileLogger(folder / "metrics.jsonl", enabled=main),
        ],
        context=context,
        reduce=True,
    )


def test_rank_0_logs_the_mean_of_every_rank(tmp_path: Path) -> None:
    group = make_group(tmp_path, FakeContext(0, [{"loss": 4.0}, {"loss": 7.0}]))
    group.log_scalars({"loss": 1.0}, 1)
    group.log_text("note", "hi", 1)
    group.log_image("picture", torch.zeros(1, 2, 2), 1)
    group.log_hyperparameters({"lr": 0.1})
    group.flush()
    group.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [without_time(json.loads(line)) for line in lines] == [
        {"step": 1, "loss": 4.0},
        {"step": 1, "note": "hi"},
    ]
    assert (tmp_path / "metrics.hparams.json").exists()
    assert any((tmp_path / "tb").iterdir())


def test_another_rank_takes_part_in_the_reduction_but_writes_nothing(tmp_path: Path) -> None:
    context = FakeContext(1, [{"loss": 4.0}])
    group = make_group(tmp_path, context)
    group.log_scalars({"loss": 1.0}, 1)
    group.log_text("note", "hi", 1)
    group.log_hyperparameters({"lr": 0.1})
    group.resume(0)
    group.flush()
    group.close()
    assert context.reductions == [["loss"]]
    assert list(tmp_path.iterdir()) == []


def test_resume_reaches_every_backend(tmp_path: Path) -> None:
    group = make_group(tmp_path, FakeContext(0, []))
    for step in range(1, 6):
        group.log_scalars({"loss": float(step)}, step)
    group.close()
    group = make_group(tmp_path, FakeContext(0, []))
    group.resume(3)
    group.log_scalars({"loss": 40.0}, 4)
    group.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == [1.0, 2.0, 3.0, 40.0]


def test_close_closes_every_backend_even_when_one_fails(tmp_path: Path) -> None:
    class Failing(MetricsFileLogger):
        def close(self) -> None:
            raise OSError("disk gone")

    last = MetricsFileLogger(tmp_path / "last.jsonl")
    group = MetricLoggerGroup([Failing(tmp_path / "first.jsonl"), last])
    group.log_scalars({"loss": 1.0}, 1)
    with pytest.raises(OSError, match="disk gone"):
        group.close()
    with pytest.raises(Exception, match="after close"):
        last.log_scalars({"loss": 1.0}, 2)


def test_something_that_is_not_a_metric_logger_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"loggers\[1\] must implement"):
        MetricLoggerGroup([MetricsFileLogger("x.jsonl"), object()])  # type: ignore[list-item]


def test_without_reduce_the_group_records_rank_0_values_and_never_communicates(
    tmp_path: Path,
) -> None:
    main = FakeContext(0, [{"loss": 7.0}])
    group = MetricLoggerGroup([MetricsFileLogger(tmp_path / "metrics.jsonl")], context=main)
    group.log_scalars({"loss": 1.0}, 1)  # what the trainer does: already reduced, rank 0 only
    group.close()
    other = FakeContext(1, [{"loss": 7.0}])
    quiet = MetricLoggerGroup([MetricsFileLogger(tmp_path / "other.jsonl")], context=other)
    quiet.log_scalars({"loss": 5.0}, 1)
    quiet.close()
    assert main.reductions == [] and other.reductions == []
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [without_time(json.loads(line)) for line in lines] == [{"step": 1, "loss": 1.0}]
    assert not (tmp_path / "other.jsonl").exists()
