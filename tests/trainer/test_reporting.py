"""What a run tells its user: throughput, timing, memory, MFU, validation lines, NaN, hparams.

Every assertion reads the real outputs: ``metrics.jsonl`` parsed strictly (a bare ``NaN`` fails),
TensorBoard's event files with TensorBoard's own reader, ``logs/rank-0.log``, the checkpoints.
The fits run in this process on a few samples; one run (and one resumed run) is shared by the
tests that only read it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from resume_checks import final_checkpoint
from tensorboard.backend.event_processing import event_accumulator
from torch import nn
from torch.utils.data import TensorDataset

from helios.ckpt import DirectoryCheckpointStore
from helios.core import ConfigurationError, Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import (
    NonFiniteLossError,
    NonFiniteLossGuard,
    PerformanceMonitor,
    Trainer,
)

FEATURES, WIDTH, CLASSES, BATCH = 8, 16, 3, 4
PERFORMANCE = (
    "throughput/samples_per_sec",
    "throughput/samples_per_sec_per_rank",
    "throughput/batches_per_sec",
    "time/step",
    "time/data_wait",
    "time/data_wait_share",
    "memory/peak_rss_mb",
)


def strict_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of metrics.jsonl, refusing what is not JSON (NaN, Infinity)."""

    def refuse(name: str) -> None:
        raise AssertionError(f"metrics.jsonl holds {name}, which is not JSON")

    text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def training_records(run_dir: Path) -> dict[int, dict[str, Any]]:
    return {r["step"]: r for r in strict_records(run_dir) if "train/loss" in r}


class Points(DataModule):
    def setup(self) -> None:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(32, FEATURES, generator=generator)
        y = torch.randint(0, CLASSES, (32,), generator=generator)
        self.add_train(TensorDataset(x, y), DataLoaderParams(batch_size=BATCH, shuffle=True))
        self.add_valid(TensorDataset(x[:8], y[:8]), DataLoaderParams(batch_size=8))
        self.add_test(TensorDataset(x[:8], y[:8]), DataLoaderParams(batch_size=8))


class Classifier(Model):
    """Two Linear layers; the loss becomes NaN on the steps in ``nan_at`` (0-based steps)."""

    monitor = "loss"

    def __init__(self, lr: float = 0.05, nan_at: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.save_hyperparameters("lr")
        self.lr = lr
        self.nan_at = nan_at

    def setup(self) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(FEATURES, WIDTH), nn.ReLU(), nn.Linear(WIDTH, CLASSES))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=self.lr)

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        if state.step in self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "tokens": torch.tensor(float(x.numel()))}

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.net(x), y)}

    def test_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"accuracy": (self.net(x).argmax(1) == y).float().mean()}


def trainer(run_dir: Path, **settings: Any) -> Trainer:
    values: dict[str, Any] = {
        "unit": "iteration",
        "total": 7,
        "log_every": 3,
        "valid_every": 4,
        "checkpoint_every": 4,
        "progress": False,
        "exit_on_signal": False,
        "hparams": {"batch_size": BATCH},
    }
    values.update(settings)
    return Trainer(run_dir, **values)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven steps, logged every 3 (3, 6 and the partial window at 7), validated at 4 and 7."""
    run_dir = tmp_path_factory.mktemp("reporting") / "run"
    trainer(run_dir).fit(Classifier(), Points())
    trainer(run_dir).test(Classifier(), Points())
    return run_dir


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four steps, then the same run extended to nine with another learning rate."""
    run_dir = tmp_path_factory.mktemp("reporting") / "resumed"
    trainer(run_dir, total=4).fit(Classifier(), Points())
    trainer(run_dir, total=9).fit(Classifier(lr=0.01), Points())
    return run_dir


def test_every_logging_point_has_throughput_timing_and_memory(run: Path) -> None:
    records = training_records(run)
    assert sorted(records) == [3, 6, 7]  # 7: the last, partial window
    for step, record in records.items():
        missing = [name for name in PERFORMANCE if name not in record]
        assert not missing, (step, missing)
        assert record["throughput/samples_per_sec"] == pytest.approx(
            BATCH * record["throughput/batches_per_sec"]
        )
        assert record["throughput/tokens_per_sec"] == pytest.approx(
            BATCH * FEATURES * record["throughput/batches_per_sec"]
        )
        assert 0 <= record["time/data_wait"] < record["time/step"]
        assert record["time/data_wait_share"] == pytest.approx(
            record["time/data_wait"] / record["time/step"]
        )
        assert record["memory/peak_rss_mb"] > 10
        assert "time/slowest_rank" not in record  # one process
        assert record["epoch"] == 0 and isinstance(record["epoch"], int)
        assert abs(record["time"] - (run / "metrics.jsonl").stat().st_mtime) < 600


def test_validation_records_and_test_metrics(run: Path) -> None:
    records = strict_records(run)
    valid = [r for r in records if "valid/loss" in r]
    assert [r["step"] for r in valid] == [4, 7]
    assert all(r["time/validation"] > 0 and r["epoch"] == 0 for r in valid)
    tested = [r for r in records if "test/accuracy" in r]
    assert [r["step"] for r in tested] == [7]  # Trainer.test of the best (last) checkpoint


def test_tensorboard_holds_the_same_figures(run: Path) -> None:
    events = event_accumulator.EventAccumulator(
        str(run / "tensorboard"), size_guidance={event_accumulator.SCALARS: 0}
    )
    events.Reload()
    tags = events.Tags()["scalars"]
    for name in PERFORMANCE:
        assert [e.step for e in events.Scalars(name)] == [3, 6, 7], name
    assert [e.step for e in events.Scalars("time/validation")] == [4, 7]
    assert "throughput/mfu" not in tags  # a CPU without a stated peak has no MFU
    plugins = events.PluginTagToContent("hparams")
    session = next(v for k, v in plugins.items() if "session_start" in k)
    assert b"batch_size" in session and b"lr" in session


def test_validation_lines_and_the_summary_reach_the_log(run: Path) -> None:
    log = (run / "logs" / "rank-0.log").read_text(encoding="utf-8")
    assert "validation 1 at step 4 (epoch 1, " in log
    assert "; loss improved: best so far " in log
    assert "validation 2 at step 7 (epoch 1, " in log
    assert "training finished at step 7 (epoch 1)" in log
    assert f"best checkpoint: {run / 'checkpoints'}" in log
    assert f"last checkpoint: {run / 'checkpoints' / 'step-00000007.pt'}" in log
    assert f"logs: {run / 'logs'}" in log and "metrics.jsonl" in log


def test_hyperparameters_of_the_user_the_model_and_the_trainer(run: Path) -> None:
    saved = json.loads((run / "metrics.hparams.json").read_text(encoding="utf-8"))
    params = saved["hyperparameters"]
    assert params["batch_size"] == BATCH and params["lr"] == 0.05
    assert params["total"] == 7 and params["model"] == "Classifier"
    assert final_checkpoint(run)["trainer"]["hparams"] == params


def test_a_window_that_spans_the_restart_has_no_timing(resumed: Path) -> None:
    records = training_records(resumed)
    assert sorted(records) == [3, 4, 6, 9]
    for step in (3, 4, 9):
        assert all(name in records[step] for name in PERFORMANCE), step
    assert not [name for name in records[6] if name.startswith(("throughput/", "time/"))]
    assert records[6]["train/loss"] > 0  # the training means are logged all the same


def test_a_resume_with_other_hyperparameters_warns_and_rewrites_them(resumed: Path) -> None:
    log = (resumed / "logs" / "rank-0.log").read_text(encoding="utf-8")
    assert "at step 4 (epoch 1, after batch 4 of the epoch)" in log
    assert "hyper-parameter 'lr' was 0.05 in " in log and "is 0.01 now" in log
    assert "total changed from 4 to 9" in log
    params = json.loads((resumed / "metrics.hparams.json").read_text())["hyperparameters"]
    assert params["total"] == 9 and params["lr"] == 0.01


def test_a_nan_loss_at_a_logging_point_stops_and_writes_null(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError) as raised:
        trainer(tmp_path, log_every=2, checkpoint_every=2, valid_every=None).fit(
            Classifier(nan_at=(4,)), Points()
        )
    message = str(raised.value)
    assert "training loss is nan in the logging window of steps 5-6" in message
    assert f"the last good checkpoint is {tmp_path / 'checkpoints' / 'step-00000004.pt'}" in message
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    assert [info.step for info in store.list()] == [2, 4]  # nothing of step 6
    store.close()
    records = training_records(tmp_path)
    assert records[6]["train/loss"] is None and math.isfinite(records[4]["train/loss"])
    log = (tmp_path / "logs" / "rank-0.log").read_text(encoding="utf-8")
    assert "metric 'train/loss' is nan at step 6; written as null" in log


def test_a_nan_loss_between_logging_points_refuses_the_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match="before the checkpoint of step 6"):
        trainer(tmp_path, log_every=4, checkpoint_every=2, valid_every=None).fit(
            Classifier(nan_at=(4,)), Points()
        )
    assert final_checkpoint(tmp_path)["training_state"]["step"] == 4


def test_skip_mode_skips_and_counts_the_steps(tmp_path: Path) -> None:
    result = trainer(tmp_path, non_finite="skip", total=6, valid_every=None).fit(
        Classifier(nan_at=(1, 4)), Points()
    )
    assert result.complete and result.state.step == 6
    records = training_records(tmp_path)
    assert [(s, r["train/skipped_steps"]) for s, r in sorted(records.items())] == [(3, 1), (6, 2)]
    assert all(math.isfinite(r["train/loss"]) for r in records.values())
    saved = final_checkpoint(tmp_path)
    assert saved["trainer"]["skipped_steps"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"]["networks"]["net"].values())


class LinearStack(Classifier):
    def setup(self) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(FEATURES, WIDTH), nn.Linear(WIDTH, CLASSES))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01)


def test_mfu_of_a_linear_stack_matches_the_analytic_flops(tmp_path: Path) -> None:
    peak = 1e9
    trainer(
        tmp_path,
        total=4,
        log_every=2,
        valid_every=None,
        callbacks=[PerformanceMonitor(peak_flops=peak)],
    ).fit(LinearStack(), Points())
    # forward 2*B*in*out per layer; backward the weight gradient of both, the input gradient
    # of the second only (the batch needs none)
    forward = 2 * BATCH * (FEATURES * WIDTH + WIDTH * CLASSES)
    analytic = forward + forward + 2 * BATCH * WIDTH * CLASSES
    for step, record in training_records(tmp_path).items():
        expected = analytic * record["throughput/batches_per_sec_per_rank"] / peak
        assert record["throughput/mfu"] == pytest.approx(expected, rel=0.05), step
        assert record["throughput/flops_per_sec"] == pytest.approx(expected * peak, rel=0.05)


def test_performance_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="peak_flops must be a positive number"):
        PerformanceMonitor(peak_flops=0)
    with pytest.raises(ConfigurationError, match=r"slow_rank_factor must be >= 1, got 0\.5"):
        PerformanceMonitor(slow_rank_factor=0.5)
    with pytest.raises(ConfigurationError, match=r"non_finite must be one of .*got 'drop'"):
        trainer(tmp_path, non_finite="drop")
    with pytest.raises(ConfigurationError, match=r"non_finite must be one of .*got 'x'"):
        NonFiniteLossGuard("x")
    with pytest.raises(ConfigurationError, match="hparams must be a dict"):
        trainer(tmp_path, hparams=[1, 2])


@pytest.mark.slow  # one launch of 2 Gloo processes
def test_a_rank_that_sleeps_in_its_step_is_named(tmp_path: Path) -> None:
    from slow_rank_job import SLEEP_S, SleepyRank
    from toy_training import ToyData

    Trainer(
        tmp_path,
        unit="iteration",
        total=6,
        log_every=2,
        devices=2,
        progress=False,
        tensorboard=False,
        callbacks=[PerformanceMonitor(slow_rank_factor=2, slow_rank_patience=2)],
    ).fit(SleepyRank(), ToyData())
    records = training_records(tmp_path)
    assert sorted(records) == [2, 4, 6]
    for step, record in records.items():
        assert record["time/slowest_rank"] == 1, step
        assert record["time/rank_work_slowest"] >= SLEEP_S, step
        if step > 2:  # the first window holds the first batch's one-off costs
            assert record["time/rank_work_fastest"] < SLEEP_S / 2, step
        # the fast rank waits for the slow one at every gradient exchange: wall time is shared
        assert record["time/step"] >= SLEEP_S, step
        assert record["throughput/samples_per_sec"] == pytest.approx(
            2 * record["throughput/samples_per_sec_per_rank"]
        )
    log = (tmp_path / "logs" / "rank-0.log").read_text(encoding="utf-8")
    warnings = [line for line in log.splitlines() if "is slower than the others" in line]
    assert len(warnings) == 1, log  # once, after two slow windows in a row (of three)
    assert "rank 1 is slower than the others in 2 logging windows in a row" in warnings[0]


class OverflowingGradients(Classifier):
    """A finite loss whose gradients overflow on the steps in ``nan_at``, as under AMP."""

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        x, y = batch
        out = self.net(x)
        if state.step in self.nan_at:
            out.register_hook(lambda grad: grad * float("inf"))
        return {"loss": nn.functional.cross_entropy(out.float(), y)}


def test_a_grad_scaler_skipped_step_is_not_a_non_finite_loss(tmp_path: Path) -> None:
    result = trainer(
        tmp_path, precision="16-mixed", non_finite="skip", total=3, valid_every=None
    ).fit(OverflowingGradients(nan_at=(1,)), Points())
    assert result.complete
    (record,) = training_records(tmp_path).values()
    assert record["train/skipped_steps"] == 0 and math.isfinite(record["train/loss"])
    scaler = final_checkpoint(tmp_path)["scaler"]
    assert scaler["scale"] < 2.0**16  # the scaler skipped the step and halved its scale
