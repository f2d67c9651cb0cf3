"""``dry_run=``: a few steps of training, a validation and the test pass; nothing in run_dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from linear_job import Linear, Points

from helios.core import ConfigurationError, Model
from helios.trainer import Callback, Trainer, TrainerState


class Counts(Callback):
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _count(self, hook: str) -> None:
        self.calls[hook] = self.calls.get(hook, 0) + 1

    def on_training_start(self, state: TrainerState, model: Model) -> None:
        self._count("on_training_start")

    def on_training_batch_start(self, state: TrainerState, model: Model) -> None:
        self._count("on_training_batch_start")

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        self._count("on_training_batch_end")

    def on_validation_start(self, state: TrainerState, model: Model) -> None:
        self._count("on_validation_start")

    def on_validation_end(self, state: TrainerState, model: Model) -> None:
        self._count("on_validation_end")

    def on_training_end(self, state: TrainerState, model: Model) -> None:
        self._count("on_training_end")

    def on_fit_exit(self, state: TrainerState, model: Model) -> None:
        self._count("on_fit_exit")


class CountingLinear(Linear):
    """Counts its test batches (the test pass has model hooks, no callback hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.test_batches = 0

    def test_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": torch.nn.functional.mse_loss(self.net(x), y)}

    def on_testing_batch_end(self, step: int) -> None:
        self.test_batches += 1


def trainer(run_dir: Path, **extra: Any) -> Trainer:
    return Trainer(
        run_dir, unit="epoch", total=2, log_every=1, devices="cpu", progress=False, **extra
    )


@pytest.mark.parametrize("existing", [False, True])
def test_dry_run_runs_every_phase_and_leaves_nothing(tmp_path: Path, existing: bool) -> None:
    run_dir = tmp_path / "run"
    if existing:
        run_dir.mkdir()
    counts = Counts()
    model = CountingLinear()
    result = trainer(run_dir, dry_run=3, callbacks=[counts]).fit(
        model, Points(batch_size=16, with_test=True)
    )
    assert result.steps_trained == 3 and result.state.step == 3
    assert result.checkpoint is None and result.resumed_from is None
    assert counts.calls == {
        "on_training_start": 1,
        "on_training_batch_start": 3,
        "on_training_batch_end": 3,
        "on_validation_start": 1,
        "on_validation_end": 1,
        "on_training_end": 1,
        "on_fit_exit": 1,
    }
    assert model.test_batches == 2  # 64 test samples in batches of 32
    assert set(model.test_metrics) == {"loss"}
    if existing:
        assert list(run_dir.iterdir()) == []
    else:
        assert not run_dir.exists()


def test_real_run_after_a_dry_run_starts_from_step_0(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trainer(run_dir, dry_run=5).fit(Linear(), Points(batch_size=16))
    after_dry = Linear()
    result = trainer(run_dir).fit(after_dry, Points(batch_size=16))
    assert result.resumed_from is None and result.steps_trained == 32
    fresh = Linear()
    trainer(tmp_path / "fresh").fit(fresh, Points(batch_size=16))
    for name, tensor in fresh.net.state_dict().items():
        assert torch.equal(after_dry.net.state_dict()[name], tensor), name


def test_dry_run_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="dry_run must be a positive int or None"):
        trainer(tmp_path, dry_run=0)


@pytest.mark.slow
def test_dry_run_with_two_spawned_ranks_leaves_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = Trainer(
        run_dir, unit="epoch", total=2, devices=2, backend="gloo", progress=False, dry_run=2
    ).fit(Linear(), Points(batch_size=16, with_test=True))
    assert result.steps_trained == 2 and result.checkpoint is None
    assert not run_dir.exists()
