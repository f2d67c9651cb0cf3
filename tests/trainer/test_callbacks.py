"""The callback seam: hook order, checkpointed callback state, built-ins, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from linear_job import Linear, Points
from resume_checks import final_checkpoint

from helios.core import ConfigurationError, Model, TrainingState
from helios.trainer import Callback, EarlyStopping, Trainer, TrainerState


def trainer(run_dir: Path, **extra: Any) -> Trainer:
    settings: dict[str, Any] = {
        "unit": "iteration",
        "total": 4,
        "valid_every": 2,
        "log_every": 2,
        "devices": "cpu",
        "progress": False,
        "tensorboard": False,
        "exit_on_signal": False,
        **extra,
    }
    return Trainer(run_dir, **settings)


class Recorder(Callback):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):
            calls = object.__getattribute__(self, "calls")
            return lambda state, model: calls.append(f"callback.{name}")
        return object.__getattribute__(self, name)


class RecordedLinear(Linear):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def on_training_start(self) -> None:
        self.calls.append("model.on_training_start")

    def on_training_batch_end(self, state: TrainingState) -> None:
        self.calls.append("model.on_training_batch_end")

    def on_validation_end(self, cycle: int) -> None:
        self.calls.append("model.on_validation_end")

    def on_training_end(self) -> None:
        self.calls.append("model.on_training_end")


def test_callbacks_run_after_the_model_hook_of_the_same_name_in_order(tmp_path: Path) -> None:
    calls: list[str] = []
    trainer(tmp_path, total=2, callbacks=[Recorder(calls)]).fit(
        RecordedLinear(calls), Points(batch_size=64)
    )
    assert calls == [
        "model.on_training_start",
        "callback.on_training_start",
        "callback.on_training_epoch_start",
        "callback.on_training_batch_start",
        "model.on_training_batch_end",
        "callback.on_training_batch_end",
        "callback.on_training_batch_start",
        "model.on_training_batch_end",
        "callback.on_training_batch_end",
        "callback.on_log",
        "callback.on_validation_start",
        "model.on_validation_end",
        "callback.on_validation_end",
        "model.on_training_end",
        "callback.on_training_end",
        "callback.on_checkpoint_start",
        "callback.on_fit_exit",
    ]


class CountSteps(Callback):
    """A stateful callback: the optimizer steps it has seen, over every resume."""

    def __init__(self) -> None:
        self.steps = 0

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]


def test_a_stateful_callback_is_checkpointed_and_restored(tmp_path: Path) -> None:
    first = CountSteps()
    trainer(tmp_path, total=3).fit(Linear(), Points(batch_size=64))  # no callback yet: fresh
    resumed = trainer(tmp_path, total=6, callbacks=[first]).fit(Linear(), Points(batch_size=64))
    assert resumed.steps_trained == 3 and first.steps == 3
    assert final_checkpoint(tmp_path)["callbacks"]["CountSteps"] == {"steps": 3}
    again = CountSteps()
    trainer(tmp_path, total=8, callbacks=[again]).fit(Linear(), Points(batch_size=64))
    assert again.steps == 5  # 3 restored from the checkpoint, then 2 more


def test_two_stateful_callbacks_with_one_key_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"CountSteps and CountSteps.*another state_key"):
        trainer(tmp_path, callbacks=[CountSteps(), CountSteps()])


def test_a_callback_that_is_not_a_callback_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"callbacks\[0\] must be a helios.trainer"):
        trainer(tmp_path, callbacks=[object()])


def test_early_stop_patience_and_an_early_stopping_callback_conflict(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="early_stop_patience=2 and callbacks="):
        trainer(tmp_path, early_stop_patience=2, callbacks=[EarlyStopping(3)])


class NeverImproves(Linear):
    monitor = "loss"

    def have_metrics_improved(self) -> bool:
        super().have_metrics_improved()
        return False


def test_the_early_stopping_callback_stops_as_the_shortcut_does(tmp_path: Path) -> None:
    stopping = EarlyStopping(patience=2)
    result = trainer(tmp_path, total=100, valid_every=3, callbacks=[stopping]).fit(
        NeverImproves(), Points(batch_size=64)
    )
    assert result.complete and result.state.step == 6
    assert stopping.count == 2 and result.state.early_stop_count == 2
    assert final_checkpoint(tmp_path)["callbacks"]["EarlyStopping"] == {"count": 2}


@pytest.mark.parametrize(
    ("unit", "total", "label"), [("iteration", 4, "train"), ("epoch", 1, "epoch 1/1")]
)
def test_the_progress_bar_callback_draws_steps_and_the_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unit: str, total: int, label: str
) -> None:
    trainer(tmp_path, unit=unit, total=total, progress=True, valid_every=None).fit(
        Linear(), Points(batch_size=64)
    )
    err = capsys.readouterr().err
    assert f"{label}: 100%" in err and "4/4" in err
    assert "loss=" in err
