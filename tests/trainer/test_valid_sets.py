"""Several validation sets: named metrics, their values, the monitor on a named set, resume.

The model is ``y = w x`` trained towards ``w = 2``; the unnamed set follows ``y = 2 x`` (its loss
falls every step) and the set ``"ood"`` follows ``y = 0.5 x`` (its loss is lowest early), so
"best by ood/loss" is a different checkpoint from "best by loss".
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from resume_checks import assert_same_training, final_checkpoint, metric_series, run_script
from tensorboard.backend.event_processing import event_accumulator
from torch import nn
from torch.utils.data import TensorDataset
from toy_training import run

from helios.core import ConfigurationError, Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import RESUMABLE_EXIT_CODE, Trainer
from helios.trainer._cli import main

X = torch.arange(1.0, 7.0).reshape(-1, 1) / 4  # six samples
SETS = {"": 2.0, "ood": 0.5}  # the slope of each validation set


class Lines(DataModule):
    def setup(self) -> None:
        self.add_train(TensorDataset(X, 2 * X), DataLoaderParams(batch_size=3))
        self.add_valid(TensorDataset(X, SETS[""] * X), DataLoaderParams(batch_size=4))
        self.add_valid(TensorDataset(X, SETS["ood"] * X), DataLoaderParams(batch_size=4), "ood")


class Slope(Model):
    monitor = "ood/loss"

    def __init__(self) -> None:
        super().__init__()
        self.validated: list[float] = []  # the weight at each validation
        self.hooks: list[str] = []

    def setup(self) -> None:
        self.net = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(self.net.weight)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.net(x), y)}

    def on_validation_start(self, validation_cycle: int) -> None:
        self.hooks.append("start")
        self.validated.append(float(self.net.weight.detach()))

    def on_validation_batch_start(self, step: int) -> None:
        self.hooks.append(f"batch {self.validation_set!r} {step}")

    def on_validation_end(self, validation_cycle: int) -> None:
        self.hooks.append("end")


def by_hand(weight: float, slope: float) -> float:
    """The mean squared error over the set, in float64."""
    x = X.double().flatten().tolist()
    return sum((weight * v - slope * v) ** 2 for v in x) / len(x)


def test_two_sets_are_logged_by_name_with_exact_values_and_ood_picks_the_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = Slope()
    Trainer(
        run_dir=tmp_path,
        unit="iteration",
        total=6,
        valid_every=1,
        checkpoint_every=1,
        log_every=1,
        progress=False,
        seed=0,
    ).fit(model, Lines())
    batches = ["batch '' 0", "batch '' 1", "batch 'ood' 0", "batch 'ood' 1"]
    assert model.hooks == ["start", *batches, "end"] * 6  # once per validation point, not per set
    assert model.validation_set == ""
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = {
        name: [(r["step"], r[name]) for r in records if name in r]
        for name in ("valid/loss", "valid/ood/loss")
    }
    for valid_set, slope in SETS.items():
        name = "valid/" + (f"{valid_set}/" if valid_set else "") + "loss"
        expected = [by_hand(w, slope) for w in model.validated]
        assert [step for step, _ in logged[name]] == list(range(1, 7))
        for (_, got), want in zip(logged[name], expected, strict=True):
            assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-8), (name, got, want)
        accumulator = event_accumulator.EventAccumulator(
            str(tmp_path / "tensorboard"), size_guidance={event_accumulator.SCALARS: 0}
        )
        accumulator.Reload()
        events = [(e.step, e.value) for e in accumulator.Scalars(name)]
        assert events == [(s, pytest.approx(v, rel=1e-5)) for s, v in logged[name]]
    assert set(model.valid_metrics) == {"loss", "ood/loss"}
    ood = [v for _, v in logged["valid/ood/loss"]]
    plain = [v for _, v in logged["valid/loss"]]
    best_step = 1 + ood.index(min(ood))
    assert best_step != 1 + plain.index(min(plain))  # the monitor really chose by "ood"
    assert main(["checkpoints", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"best by ood/loss (min): step-{best_step:08d}.pt" in out


def test_names_must_be_unique_and_plain() -> None:
    class Twice(DataModule):
        def __init__(self, first: str | None, second: str | None) -> None:
            super().__init__()
            self.names = first, second

        def setup(self) -> None:
            for name in self.names:
                self.add_valid(TensorDataset(X), name=name)

    with pytest.raises(ConfigurationError, match="unnamed validation set"):
        Twice(None, None).setup()
    with pytest.raises(ConfigurationError, match="named 'ood'"):
        Twice("ood", "ood").setup()
    with pytest.raises(ConfigurationError, match="without '/'"):
        Twice("a/b", None).setup()
    data = Twice("ood", None)
    data.setup()
    assert list(data.valid_dataloaders()) == ["ood", ""]
    assert data.valid_dataloader() is data.valid_dataloaders()["ood"]  # the first added


SETTINGS = {
    "unit": "iteration",
    "total": 30,
    "checkpoint_every": 5,
    "valid_every": 4,
    "log_every": 1,
    "seed": 3,
    "workers": 0,
    "valid_sets": ["ood"],
    "monitor": "ood/loss",
}


@pytest.mark.slow
def test_sigterm_mid_epoch_with_two_sets_then_resume_is_identical(tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run({"run_dir": str(straight), **SETTINGS})
    with pytest.raises(SystemExit) as exited:
        run({"run_dir": str(stopped), **SETTINGS, "sigterm_at": 13})
    assert exited.value.code == RESUMABLE_EXIT_CODE
    assert final_checkpoint(stopped)["training_state"]["batch_in_epoch"] not in (0, 12)
    run_script("toy_training.py", {"run_dir": str(stopped), **SETTINGS})
    assert_same_training(straight, stopped)
    for name in ("valid/ood/loss", "valid/loss"):
        assert metric_series(straight, name) == metric_series(stopped, name)
        assert len(metric_series(straight, name)) == 30 // 4 + 1


class SlopeOnPlateau(Slope):
    def setup(self) -> None:
        super().setup()
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, patience=0, factor=0.5
        )


def test_early_stopping_and_reduce_on_plateau_watch_the_named_set(tmp_path: Path) -> None:
    model = SlopeOnPlateau()
    Trainer(
        run_dir=tmp_path,
        unit="iteration",
        total=20,
        valid_every=1,
        log_every=1,
        early_stop_patience=3,
        progress=False,
        tensorboard=False,
        seed=0,
    ).fit(model, Lines())
    ood = metric_series(tmp_path, "valid/ood/loss")
    best, count, stop = math.inf, 0, None
    for step, value in ood:  # what EarlyStopping(3) decides from the "ood" series alone
        best, count = (value, 0) if value < best else (best, count + 1)
        if count == 3:
            stop = step
            break
    assert stop is not None and stop < 20  # the unnamed set's loss falls every step
    assert ood[-1][0] == stop
    assert all(
        b < a for (_, a), (_, b) in itertools.pairwise(metric_series(tmp_path, "valid/loss"))
    )
    assert model.optimizer.param_groups[0]["lr"] == 0.1 * 0.5**3  # one halving per worse one
