"""Automatic optimisation: accumulation, precision, clipping, the manual path, early stopping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from linear_job import Linear, Points
from resume_checks import final_checkpoint, metric_series
from torch import nn

from helios.core import ConfigurationError, Model, TrainingState
from helios.trainer import Trainer


def fit(run_dir: Path, model: Model, batch_size: int = 16, **options: Any) -> Any:
    options = {"unit": "epoch", "total": 2, "progress": False, "tensorboard": False, **options}
    return Trainer(run_dir, **options).fit(model, Points(batch_size))


def test_accumulating_4_batches_of_16_matches_one_batch_of_64(tmp_path: Path) -> None:
    big, small = Linear(), Linear()
    fit(tmp_path / "big", big, batch_size=64)
    fit(tmp_path / "small", small, batch_size=16, accumulate=4)
    for a, b in zip(big.net.parameters(), small.net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert final_checkpoint(tmp_path / "small")["training_state"]["step"] == 8
    without = Linear()
    fit(tmp_path / "plain", without, batch_size=16)
    assert not torch.allclose(next(without.net.parameters()), next(big.net.parameters()))


def test_bf16_trains_and_logs_finite_losses(tmp_path: Path) -> None:
    model = Linear()
    result = fit(tmp_path, model, precision="bf16", log_every=4)
    assert result.complete
    losses = [value for _, value in metric_series(tmp_path, "train/loss")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


def test_fp16_checkpoints_the_grad_scaler(tmp_path: Path) -> None:
    fit(tmp_path, Linear(), precision="16-mixed")
    scaler = final_checkpoint(tmp_path)["scaler"]
    assert scaler is not None and scaler["scale"] > 0


def test_clipping_bounds_the_update(tmp_path: Path) -> None:
    clipped, free = Linear(), Linear()
    fit(tmp_path / "clipped", clipped, total=1, clip_grad_norm=1e-3)
    fit(tmp_path / "free", free, total=1)
    start = Linear()
    start.setup()
    moved_clipped = sum(
        (a - b).norm()
        for a, b in zip(clipped.net.parameters(), start.net.parameters(), strict=True)
    )
    moved_free = sum(
        (a - b).norm() for a, b in zip(free.net.parameters(), start.net.parameters(), strict=True)
    )
    assert moved_clipped < moved_free / 10


class Manual(Linear):
    automatic_optimization = False

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}


def test_manual_optimisation_matches_automatic(tmp_path: Path) -> None:
    manual, automatic = Manual(), Linear()
    fit(tmp_path / "manual", manual)
    fit(tmp_path / "auto", automatic)
    for a, b in zip(manual.net.parameters(), automatic.net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_manual_optimisation_refuses_accumulation(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="accumulate"):
        fit(tmp_path, Manual(), accumulate=2)


class NeverImproves(Linear):
    monitor = "loss"
    monitor_mode = "min"

    def have_metrics_improved(self) -> bool:
        super().have_metrics_improved()
        return False


def test_early_stopping_after_patience_validations(tmp_path: Path) -> None:
    result = fit(
        tmp_path,
        NeverImproves(),
        unit="iteration",
        total=1000,
        valid_every=3,
        early_stop_patience=2,
    )
    assert result.complete
    assert result.state.step == 6
    assert result.state.early_stop_count == 2
    again = fit(
        tmp_path,
        NeverImproves(),
        unit="iteration",
        total=1000,
        valid_every=3,
        early_stop_patience=2,
    )
    assert again.state.step == 6  # complete: nothing more to train


class StopsAtFive(Linear):
    def should_training_stop(self) -> bool:
        return True


def test_should_training_stop_ends_training_with_a_checkpoint(tmp_path: Path) -> None:
    result = fit(tmp_path, StopsAtFive(), unit="iteration", total=100)
    assert result.complete and result.state.step == 1
    assert final_checkpoint(tmp_path)["trainer"]["finished"]


def test_wrong_train_step_output_is_a_clear_error(tmp_path: Path) -> None:
    class Wrong(Linear):
        def train_step(self, batch: Any, state: TrainingState) -> Any:
            return {"accuracy": torch.tensor(1.0)}

    with pytest.raises(ConfigurationError, match="without a tensor under 'loss'"):
        fit(tmp_path, Wrong())


class MeanOfInputs(Linear):
    """Validation returns the batch mean of x: the trainer must weight it by batch size."""

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, _ = batch
        return {"mean_x": x.mean(), "batch": torch.tensor(float(len(x)))}


def test_validation_metrics_are_means_over_samples_not_batches(tmp_path: Path) -> None:
    model = MeanOfInputs()
    data = Points(16)
    fit(tmp_path, model, total=1)
    data.configure(rank=0, world_size=1, seed=0)
    data.setup()
    loader = data.valid_dataloader()
    assert loader is not None
    xs = torch.cat([x for x, _ in loader])
    assert model.valid_metrics["mean_x"] == pytest.approx(xs.mean().item(), rel=1e-6)
    # 64 samples in batches of 24, 24 and 16: weighted by samples (24*24 + 24*24 + 16*16) / 64
    assert model.valid_metrics["batch"] == pytest.approx(22.0)  # per batch it would be 21.33
