"""The user's own objects at the seams: never closed by the trainer, factories, conflicts."""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from linear_job import Linear, Points

from helios.ckpt import DirectoryCheckpointStore
from helios.core import ConfigurationError
from helios.log import MetricsFileLogger
from helios.trainer import Trainer


class WithTestStep(Linear):
    def test_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": torch.nn.functional.mse_loss(self.net(x), y)}


def trainer(run_dir: Path, total: int = 2, **extra: Any) -> Trainer:
    return Trainer(
        run_dir,
        unit="iteration",
        total=total,
        log_every=1,
        devices="cpu",
        progress=False,
        exit_on_signal=False,
        **extra,
    )


def test_a_user_logger_and_store_survive_two_fits_and_a_test(tmp_path: Path) -> None:
    logger = MetricsFileLogger(tmp_path / "mine.jsonl")
    store = DirectoryCheckpointStore(tmp_path / "mine")
    trainer(tmp_path, metric_logger=logger, checkpoint_store=store).fit(Linear(), Points(64))
    second = trainer(tmp_path, total=4, metric_logger=logger, checkpoint_store=store)
    result = second.fit(Linear(), Points(64))
    assert result.resumed_from is not None and result.steps_trained == 2
    metrics = second.test(WithTestStep(), Points(64, with_test=True))
    assert set(metrics) == {"loss"}
    assert [info.step for info in store.list()][-1] == 4
    logger.log_scalars({"after": 1.0}, 5)  # still open
    logger.close()
    store.close()
    assert (tmp_path / "mine.jsonl").read_text().count('"train/loss"') == 4


def test_factories_build_the_store_and_logger(tmp_path: Path) -> None:
    made: list[Path] = []

    def store_factory(folder: Path) -> DirectoryCheckpointStore:
        made.append(folder)
        return DirectoryCheckpointStore(folder, keep_last=1)

    def logger_factory(run_dir: Path) -> MetricsFileLogger:
        made.append(run_dir)
        return MetricsFileLogger(run_dir / "factory.jsonl")

    trainer(tmp_path, checkpoint_store=store_factory, metric_logger=logger_factory).fit(
        Linear(), Points(64)
    )
    assert made[:2] == [tmp_path / "checkpoints", tmp_path]
    assert len(list((tmp_path / "checkpoints").glob("step-*.pt"))) == 1
    assert (tmp_path / "factory.jsonl").read_text().count('"train/loss"') == 2


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ({"devices": 2}, ("distributed=", "devices=2")),
        ({"backend": "gloo"}, ("distributed=", "backend='gloo'")),
        ({"timeout": timedelta(seconds=5)}, ("distributed=", "timeout=")),
    ],
)
def test_distributed_conflicts_with_what_it_replaces(
    tmp_path: Path, extra: dict[str, Any], names: tuple[str, str]
) -> None:
    from helios.dist import TorchDistributed

    context = TorchDistributed.from_environment(backend="gloo", device="cpu")
    try:
        with pytest.raises(ConfigurationError) as refused:
            Trainer(tmp_path, total=1, distributed=context, **extra)
        assert all(name in str(refused.value) for name in names)
    finally:
        context.close()


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ({"keep_checkpoints": 5}, ("checkpoint_store=", "keep_checkpoints=5")),
        ({"keep_best": 1}, ("checkpoint_store=", "keep_best=1")),
        ({"async_checkpoints": True}, ("checkpoint_store=", "async_checkpoints=True")),
    ],
)
def test_a_store_conflicts_with_the_settings_of_the_default_one(
    tmp_path: Path, extra: dict[str, Any], names: tuple[str, str]
) -> None:
    store = DirectoryCheckpointStore(tmp_path / "mine")
    try:
        with pytest.raises(ConfigurationError) as refused:
            Trainer(tmp_path, total=1, checkpoint_store=store, **extra)
        assert all(name in str(refused.value) for name in names)
    finally:
        store.close()


@pytest.mark.parametrize("tensorboard", [True, False])
def test_a_logger_conflicts_with_tensorboard(tmp_path: Path, tensorboard: bool) -> None:
    logger = MetricsFileLogger(tmp_path / "mine.jsonl")
    with pytest.raises(ConfigurationError, match=f"metric_logger= and tensorboard={tensorboard}"):
        Trainer(tmp_path, total=1, metric_logger=logger, tensorboard=tensorboard)


class LockedLogger(MetricsFileLogger):
    """A logger holding a lock, as many do: it cannot be pickled into spawned processes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lock = threading.Lock()

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        with self.lock:
            super().log_scalars(metrics, step)


def test_an_instance_that_cannot_be_spawned_asks_for_a_factory(tmp_path: Path) -> None:
    logger = LockedLogger(tmp_path / "mine.jsonl")
    with pytest.raises(ConfigurationError, match=r"metric_logger=LockedLogger instance.*factory"):
        Trainer(tmp_path, total=1, devices=2, metric_logger=logger).fit(Linear(), Points(64))
    assert not (tmp_path / "checkpoints").exists()  # refused before anything started


def test_a_store_factory_crosses_into_two_processes(tmp_path: Path) -> None:
    factory = functools.partial(DirectoryCheckpointStore, keep_last=1)
    result = Trainer(
        tmp_path,
        unit="iteration",
        total=3,
        devices=2,
        progress=False,
        tensorboard=False,
        checkpoint_store=factory,
    ).fit(Linear(), Points(32))
    assert result.complete and result.state.step == 3
    assert [path.name for path in (tmp_path / "checkpoints").glob("step-*.pt")] == [
        "step-00000003.pt"
    ]
