"""Each misuse of issue 14's list gets a ``helios.core`` error that says what was wrong.

Every case names the argument or file, the bad value and what was expected; none is a raw
traceback from deep inside torch or the standard library.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from run_folder_jobs import BlobsWithValidation, Validated

from helios.ckpt import DirectoryCheckpointStore, _format
from helios.core import (
    ConfigurationError,
    HeliosError,
    ResumeError,
    TrainingState,
)
from helios.data import DataLoaderParams, DataModule
from helios.log import MetricsFileLogger
from helios.trainer import SAME_REQUEST_SECONDS, Trainer, TrainingAbortedError
from helios.trainer._cli import main

QUIET: dict[str, Any] = {"progress": False, "tensorboard": False, "devices": "cpu"}


def trainer(run_dir: Path, **settings: Any) -> Trainer:
    return Trainer(run_dir, **{"unit": "iteration", "total": 4, **QUIET, **settings})


def test_clip_grad_norm_as_a_string(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"clip_grad_norm must be a positive number.*'1'"):
        trainer(tmp_path, clip_grad_norm="1")


def test_run_dir_none() -> None:
    with pytest.raises(ConfigurationError, match=r"run_dir must be the path of a folder.*None"):
        Trainer(None, total=1)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.platform != "linux", reason="needs a folder no one may write")
def test_run_dir_that_cannot_be_written(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        run_dir = Path("/sys")  # not writable even by root
    else:
        run_dir = tmp_path / "read-only"
        run_dir.mkdir()
        run_dir.chmod(0o555)
    with pytest.raises(ConfigurationError, match=f"run_dir '{run_dir}' is not writable"):
        trainer(run_dir).fit(Validated(), BlobsWithValidation())


def test_a_datamodule_class_instead_of_an_instance(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigurationError, match="datamodule must be an instance, got the class BlobsWithValid"
    ):
        trainer(tmp_path).fit(Validated(), BlobsWithValidation)  # type: ignore[arg-type]


class ForgotSuper(DataModule):
    def __init__(self) -> None:
        self.size = 8  # no super().__init__()

    def setup(self) -> None:
        x = torch.randn(40, 4)
        self.add_train(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), DataLoaderParams(8))


def test_a_datamodule_without_super_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"ForgotSuper.__init__ did not call super"):
        trainer(tmp_path).fit(Validated(), ForgotSuper())


class NonScalarLoss(Validated):
    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y, reduction="none")


class DetachedLoss(Validated):
    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        return super().train_step(batch, state).detach()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (NonScalarLoss, r"loss of shape \(8,\); expected a scalar"),
        (DetachedLoss, "loss that does not require grad"),
    ],
)
def test_a_loss_that_cannot_be_optimised(tmp_path: Path, model: type, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        trainer(tmp_path).fit(model(), BlobsWithValidation())


class WithSGD(Validated):
    def setup(self) -> None:
        super().setup()
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=3)


def test_an_optimizer_class_changed_between_runs(tmp_path: Path) -> None:
    trainer(tmp_path, total=2).fit(WithSGD(), BlobsWithValidation())
    with pytest.raises(ResumeError, match=r"optimizer 'optimizer' is a AdamW.*lacks.*'betas'"):
        trainer(tmp_path, total=4).fit(Validated(), BlobsWithValidation())


def test_a_batch_size_changed_on_resume(tmp_path: Path) -> None:
    trainer(tmp_path, total=2).fit(Validated(), BlobsWithValidation(batch_size=8))
    with pytest.raises(ResumeError, match=r"saved with batch_size=8.*has batch_size=4"):
        trainer(tmp_path, total=4).fit(Validated(), BlobsWithValidation(batch_size=4))


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    trainer(tmp_path / "run", total=2).fit(Validated(), BlobsWithValidation())
    return tmp_path / "run" / "checkpoints" / "step-00000002.pt"


def test_export_of_a_class_that_is_not_a_model(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(checkpoint), "--model", "run_folder_jobs:BlobsWithValidation"]) == 2
    assert "names run_folder_jobs.BlobsWithValidation, which is not a helios.core.Model" in (
        capsys.readouterr().err
    )


def test_verify_resume_of_a_class_that_is_not_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--model", "run_folder_jobs:BlobsWithValidation", "--data", "verify_jobs:Blobs"]
    assert main(["verify-resume", *args]) == 2
    assert "which is not a helios.core.Model" in capsys.readouterr().err


def test_export_of_a_checkpoint_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    info = store.save({"weights": torch.zeros(3)}, step=1, epoch=0)
    assert main(["export", str(info.path), "--model", "run_folder_jobs:Validated"]) == 2
    assert "holds no 'model' state (keys: ['weights'])" in capsys.readouterr().err


def test_helios_checkpoints_of_one_file(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["checkpoints", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if checkpoint.name in line)
    assert " ok " in row


def test_a_second_stop_signal_while_the_stop_checkpoint_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopping = False
    write = _format._PayloadSink.write

    def write_and_signal(self: Any, data: Any) -> int:
        nonlocal stopping
        if stopping:
            stopping = False
            # A second request, not a relayed copy of the first: it comes after the window in
            # which copies of one signal count once; it arrives in the middle of the write.
            time.sleep(SAME_REQUEST_SECONDS + 0.2)
            os.kill(os.getpid(), signal.SIGTERM)
        return write(self, data)

    class StopsAtStep2(Validated):
        def on_training_batch_end(self, state: TrainingState) -> None:
            nonlocal stopping
            if state.step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                stopping = True

    monkeypatch.setattr(_format._PayloadSink, "write", write_and_signal)
    run = trainer(tmp_path, total=4, exit_on_signal=False)
    with pytest.raises(TrainingAbortedError, match="SIGTERM received while stopping"):
        run.fit(StopsAtStep2(), BlobsWithValidation())
    assert os.listdir(tmp_path / "checkpoints") == []  # no checkpoint, no temporary file


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_under_metrics_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.symlink_to("/dev/full")  # every write: ENOSPC, as on a full disk
    logger = MetricsFileLogger(path)
    with pytest.raises(HeliosError, match=f"cannot write the metrics file {path}: No space") as err:
        logger.log_scalars({"train/loss": 1.0}, step=1)
    assert isinstance(err.value.__cause__, OSError)
    assert err.value.__context__ is err.value.__cause__  # no second error chained on top
    logger.close()  # and closing raises nothing more
