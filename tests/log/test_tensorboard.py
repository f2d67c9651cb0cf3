"""The TensorBoard backend (helios.log.TensorBoardLogger), read back with TensorBoard's reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from helios.core import ConfigurationError, HeliosError, MetricLogger
from helios.log import TensorBoardLogger

EVERYTHING = {
    event_accumulator.SCALARS: 0,  # 0 keeps every event instead of a reservoir sample
    event_accumulator.TENSORS: 0,
    event_accumulator.IMAGES: 0,
}


def read(log_dir: Path) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance=EVERYTHING)
    accumulator.Reload()
    return accumulator


def scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in read(log_dir).Scalars(tag)]


def test_implements_the_metric_logger_protocol(tmp_path: Path) -> None:
    assert isinstance(TensorBoardLogger(tmp_path), MetricLogger)


def test_event_files_hold_exactly_the_logged_pairs(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    # Values TensorBoard stores exactly (it keeps float32), numbers and tensors alike.
    logged = [(step, 1.0 / (step + 1) if step % 2 else step * 0.25) for step in range(1, 31)]
    for step, value in logged:
        logger.log_scalars({"train/loss": value, "lr": torch.tensor(step * 0.5)}, step)
    logger.close()

    expected_loss = [
        (step, float(torch.tensor(value, dtype=torch.float32))) for step, value in logged
    ]
    assert scalars(tmp_path, "train/loss") == expected_loss
    assert scalars(tmp_path, "lr") == [(step, step * 0.5) for step in range(1, 31)]


def test_text_hyperparameters_and_images_are_readable(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_scalars({"loss": 1.0}, 3)
    logger.log_text("notes", "**hello** from step 3", 3)
    logger.log_hyperparameters(
        {"lr": 0.001, "optimizer": "adamw", "layers": [2, 3], "skip": None},
        {"valid/accuracy": 0.75},
    )
    image = torch.zeros(3, 4, 5)
    image[0] = 1.0  # a red image, 4 high and 5 wide
    logger.log_image("samples", image, 3)
    logger.close()

    accumulator = read(tmp_path)
    (text,) = accumulator.Tensors("notes/text_summary")
    assert text.step == 3
    assert text.tensor_proto.string_val == [b"**hello** from step 3"]

    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["lr"].number_value == 0.001
    assert hparams["optimizer"].string_value == "adamw"
    assert hparams["layers"].string_value == "[2, 3]"
    assert "skip" not in hparams
    assert [(e.step, e.value) for e in accumulator.Scalars("hparams/valid/accuracy")] == [(3, 0.75)]

    (picture,) = accumulator.Images("samples")
    assert (picture.step, picture.height, picture.width) == (3, 4, 5)
    assert picture.encoded_image_string.startswith(b"\x89PNG")


def test_a_disabled_logger_creates_no_file(tmp_path: Path) -> None:
    log_dir = tmp_path / "tb"
    logger = TensorBoardLogger(log_dir, enabled=False)
    logger.log_scalars({"loss": 1.0}, 1)
    logger.log_text("t", "x", 1)
    logger.log_hyperparameters({"lr": 0.1})
    logger.log_image("i", torch.zeros(1, 2, 2), 1)
    logger.resume(1)
    logger.flush()
    logger.close()
    assert not log_dir.exists()


def test_a_logger_that_never_logs_creates_no_file(tmp_path: Path) -> None:
    TensorBoardLogger(tmp_path / "tb").close()
    assert not (tmp_path / "tb").exists()


def run_until(log_dir: Path, steps: range, *, resume_from: int | None, offset: float) -> None:
    """One process's life: maybe resume, log ``steps``, stop (the writer is flushed, not closed)."""
    logger = TensorBoardLogger(log_dir)
    if resume_from is not None:
        logger.resume(resume_from)
    for step in steps:
        logger.log_scalars({"train/loss": step + offset, "train/other": -step - offset}, step)
    logger.flush()  # what a killed process had on disk; the object is simply dropped


def test_stop_at_50_checkpoint_at_40_resume_to_80_logs_each_step_once(tmp_path: Path) -> None:
    run_until(tmp_path, range(1, 51), resume_from=None, offset=0.0)
    run_until(tmp_path, range(41, 81), resume_from=40, offset=1000.0)

    for tag, sign in (("train/loss", 1), ("train/other", -1)):
        pairs = scalars(tmp_path, tag)
        assert [step for step, _ in pairs] == list(range(1, 81))
        # 1..40 from the first run; 41..80 from the resumed one (the stale 41..50 are gone)
        expected = [(s, sign * (s + (1000.0 if s > 40 else 0.0))) for s in range(1, 81)]
        assert pairs == expected


def test_two_restarts_still_log_each_step_once(tmp_path: Path) -> None:
    run_until(tmp_path, range(1, 31), resume_from=None, offset=0.0)
    run_until(tmp_path, range(21, 46), resume_from=20, offset=100.0)
    run_until(tmp_path, range(41, 61), resume_from=40, offset=200.0)

    pairs = scalars(tmp_path, "train/loss")
    assert [step for step, _ in pairs] == list(range(1, 61))
    assert pairs[19] == (20, 20.0)
    assert pairs[20] == (21, 121.0)
    assert pairs[39] == (40, 140.0)
    assert pairs[40] == (41, 241.0)


def test_resume_without_logging_afterwards_still_hides_later_steps(tmp_path: Path) -> None:
    run_until(tmp_path, range(1, 11), resume_from=None, offset=0.0)
    logger = TensorBoardLogger(tmp_path)
    logger.resume(5)
    logger.close()
    assert [step for step, _ in scalars(tmp_path, "train/loss")] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("step", [-1, 1.5, True])
def test_a_bad_step_is_a_configuration_error(tmp_path: Path, step: object) -> None:
    logger = TensorBoardLogger(tmp_path)
    with pytest.raises(ConfigurationError, match="step must be an int >= 0"):
        logger.log_scalars({"loss": 1.0}, step)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="step must be an int >= 0"):
        logger.resume(step)  # type: ignore[arg-type]
    logger.close()


def test_a_non_scalar_metric_is_a_configuration_error(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    with pytest.raises(ConfigurationError, match="'loss' must be a real number"):
        logger.log_scalars({"loss": torch.ones(3)}, 1)
    with pytest.raises(ConfigurationError, match="'acc' must be a real number"):
        logger.log_scalars({"acc": "high"}, 1)  # type: ignore[dict-item]
    logger.close()


def test_logging_after_close_is_an_error(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.close()
    logger.close()  # idempotent
    with pytest.raises(HeliosError, match="after close"):
        logger.log_scalars({"loss": 1.0}, 1)
