"""Mistakes in a user's Model or data are caught when fit starts, not an epoch later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from run_folder_jobs import BlobsWithValidation, Validated
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helios.ckpt import DirectoryCheckpointStore
from helios.core import ConfigurationError, ExportTarget, ModelWarning
from helios.trainer import Trainer

QUIET: dict[str, Any] = {"progress": False, "tensorboard": False, "devices": "cpu"}


def trainer(run_dir: Path, **settings: Any) -> Trainer:
    return Trainer(run_dir, **{"unit": "iteration", "total": 3, **QUIET, **settings})


class ForgotSuperInit(Validated):
    def __init__(self, width: int) -> None:  # no super().__init__()
        self.width = width


def test_a_model_without_super_init_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"ForgotSuperInit.__init__ does not call super"):
        trainer(tmp_path).fit(ForgotSuperInit(4), BlobsWithValidation())
    assert not (tmp_path / "checkpoints").exists()  # nothing ran


@pytest.mark.parametrize("kind", ["DataLoader", "Dataset"])
def test_a_torch_loader_or_dataset_as_data_says_to_wrap_it(tmp_path: Path, kind: str) -> None:
    dataset = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    given = DataLoader(dataset, batch_size=4) if kind == "DataLoader" else dataset
    with pytest.raises(ConfigurationError) as caught:
        trainer(tmp_path).fit(Validated(), given)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"datamodule is a torch {kind}; the trainer needs a helios.data")
    assert "class Data(DataModule):" in message
    assert "self.add_train(train_set, DataLoaderParams(batch_size=64))" in message


class HeadsInAList(Validated):
    def setup(self) -> None:
        super().setup()
        self.heads = [nn.Linear(4, 2)]


def test_a_network_in_a_plain_list_is_warned_about_once_at_fit_start(tmp_path: Path) -> None:
    result = trainer(tmp_path).fit(HeadsInAList(), BlobsWithValidation())
    assert result.complete  # a warning, not an error
    # While fit runs, Python warnings go to the rank's log file (and the console), once.
    log = (tmp_path / "logs" / "rank-0.log").read_text()
    lines = [line for line in log.splitlines() if "HeadsInAList.heads[0] is a network" in line]
    assert len(lines) == 1
    assert ModelWarning.__name__ in lines[0]
    assert "nn.ModuleList / nn.ModuleDict" in lines[0]


class Exportable(Validated):
    def export_target(self) -> ExportTarget:
        return ExportTarget(self.net, (torch.randn(2, 4),))


def test_an_onnx_file_names_the_checkpoint_it_came_from(tmp_path: Path) -> None:
    run = trainer(tmp_path)
    run.fit(Exportable(), BlobsWithValidation())
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    latest = store.latest()
    store.close()
    assert latest is not None and latest.sha256

    report = run.export(Exportable(), "last")

    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert props["helios.checkpoint"] == latest.path.name
    assert props["helios.checkpoint.step"] == "3"
    assert props["helios.checkpoint.sha256"] == latest.sha256
    assert props["helios.version"] and props["helios.export.version"]
