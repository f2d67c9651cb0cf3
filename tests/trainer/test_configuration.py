"""Trainer arguments are validated up front; resume modes; replaceable components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from linear_job import Linear, Points
from resume_checks import metric_series

from helios.core import ConfigurationError, MetricLogger
from helios.trainer import Trainer


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unit": "step"}, "unit must be 'epoch' or 'iteration'"),
        ({"total": 0}, "total must be a positive int"),
        ({"accumulate": 0}, "accumulate must be a positive int"),
        ({"valid_every": -1}, "valid_every must be a positive int or None"),
        ({"precision": "16"}, "precision must be one of"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm must be a positive number"),
        ({"devices": 0}, "devices must be at least 1"),
        ({"devices": [0, 0]}, "devices must be 'auto', 'cpu'"),
        ({"devices": "gpu"}, "devices must be 'auto', 'cpu'"),
        ({"seed": -3}, "seed must be an int"),
        ({"resume": "no/such/file.pt"}, "is not a file"),
        ({"backend": "mpi"}, "backend must be"),
        ({"metric_logger": object()}, "metric_logger does not implement"),
    ],
)
def test_bad_arguments_are_refused_up_front(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Trainer(tmp_path, **{"total": 1, **options})


def test_gpu_ids_without_cuda_are_refused(tmp_path: Path) -> None:
    trainer = Trainer(tmp_path, total=1, devices=[0], progress=False)
    with pytest.raises(ConfigurationError, match="CUDA is not available"):
        trainer.fit(Linear(), Points(16))


def test_resume_never_refuses_a_folder_with_checkpoints(tmp_path: Path) -> None:
    Trainer(tmp_path, total=1, progress=False, tensorboard=False).fit(Linear(), Points(16))
    with pytest.raises(ConfigurationError, match="already holds checkpoints"):
        Trainer(tmp_path, total=2, resume="never", progress=False).fit(Linear(), Points(16))


def test_resume_from_an_explicit_checkpoint(tmp_path: Path) -> None:
    first = tmp_path / "first"
    Trainer(first, total=1, progress=False, tensorboard=False).fit(Linear(), Points(16))
    checkpoint = next((first / "checkpoints").glob("*.pt"))
    result = Trainer(
        tmp_path / "second", total=2, resume=checkpoint, progress=False, tensorboard=False
    ).fit(Linear(), Points(16))
    assert result.resumed_from == checkpoint
    assert result.state.epoch == 2


class ListLogger:
    """A user's own MetricLogger: no Helios class involved."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log_scalars(self, metrics: Any, step: int) -> None:
        self.records.append((step, dict(metrics)))

    def log_text(self, tag: str, text: str, step: int) -> None:
        pass

    def log_hyperparameters(self, params: Any, metrics: Any = None) -> None:
        pass

    def resume(self, step: int) -> None:
        self.records = [r for r in self.records if r[0] <= step]

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_user_metric_logger_replaces_the_default(tmp_path: Path) -> None:
    logger = ListLogger()
    assert isinstance(logger, MetricLogger)
    Trainer(tmp_path, total=1, log_every=4, metric_logger=logger, progress=False).fit(
        Linear(), Points(16)
    )
    assert [step for step, metrics in logger.records if "train/loss" in metrics] == [4, 8, 12, 16]
    assert not (tmp_path / "metrics.jsonl").exists()


def test_test_uses_the_best_checkpoint(tmp_path: Path) -> None:
    class Monitored(Linear):
        monitor = "loss"

        def test_step(self, batch: Any, step: int) -> dict[str, Any]:
            return self.valid_step(batch, step)

    trainer = Trainer(tmp_path, total=3, progress=False, tensorboard=False)
    trainer.fit(Monitored(), Points(16, with_test=True))
    metrics = trainer.test(Monitored(), Points(16, with_test=True))
    valid = dict(metric_series(tmp_path, "valid/loss"))
    assert metrics["loss"] == pytest.approx(min(valid.values()), rel=1e-6)


class GeneratorSource(Points):
    """A data source whose training loader is a bare generator (no len)."""

    def train_dataloader(self) -> Any:
        loader = super().train_dataloader()
        return (batch for batch in loader or [])


def test_a_training_loader_without_len_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"datamodule: GeneratorSource\.train_dataloader\(\) .* without len",
    ):
        Trainer(tmp_path, total=1, progress=False).fit(Linear(), GeneratorSource(16))
