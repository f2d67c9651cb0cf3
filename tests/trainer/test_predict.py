"""``Trainer.predict``: every sample once, in dataset order, with 1 and 2 ranks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from predict_job import SAMPLES, PredictData, Regressor, inputs
from signal_checks import job_environment
from torch.utils.data import TensorDataset

from helios.core import ConfigurationError, Model, TrainingState
from helios.data import DataLoaderParams
from helios.dist import free_port
from helios.trainer import Trainer, _checkpoint, _seams

JOB = Path(__file__).parents[1] / "support" / "predict_job.py"


def expected(model: Model, batch_size: int = 4) -> torch.Tensor:
    """``net(x)`` over the dataset in order, by hand, in batches as predict forms them.

    Each batch is a fresh tensor, as the loader's collate makes it: a matmul over a slice at an
    unaligned offset may differ in the last bit.
    """
    x = inputs()
    with torch.no_grad():
        return torch.cat(
            [model.net(x[i : i + batch_size].clone()) for i in range(0, len(x), batch_size)]
        )


def test_in_memory_model_in_dataset_order_leaves_run_dir_untouched(tmp_path: Path) -> None:
    model = Regressor()
    model.setup()
    run_dir = tmp_path / "absent"
    outputs = Trainer(run_dir, total=1, devices="cpu", progress=False).predict(
        model, PredictData(batch_size=4), checkpoint=None
    )
    assert [len(o) for o in outputs] == [4] * 9 + [1]
    assert torch.equal(torch.cat(outputs), expected(model))
    assert not run_dir.exists()
    assert not model.net.training


class HighestLossIsBest(Regressor):
    """The loss falls as it trains, so "best" is an early checkpoint, not the last."""

    monitor_mode = "max"


def test_best_checkpoint_weights_are_used(tmp_path: Path) -> None:
    trainer = Trainer(
        tmp_path,
        unit="iteration",
        total=6,
        valid_every=1,
        checkpoint_every=1,
        keep_checkpoints=1,
        devices="cpu",
        progress=False,
    )
    trainer.fit(HighestLossIsBest(), PredictData())
    best = HighestLossIsBest()
    best.setup()
    checkpoints = sorted((tmp_path / "checkpoints").glob("*"))
    # the checkpoint "best" names, read through the trainer's own reader
    with _seams.checkpoint_store(trainer.settings, best) as store:
        info = _checkpoint.find_checkpoint(store, "best", tmp_path)
        saved = _checkpoint.load(store, info.path, map_location="cpu")
    best.load_state_dict(_checkpoint.model_state(saved, info.path))
    last = HighestLossIsBest()
    last.setup()
    with _seams.checkpoint_store(trainer.settings, last) as store:
        info_last = _checkpoint.find_checkpoint(store, "last", tmp_path)
        saved = _checkpoint.load(store, info_last.path, map_location="cpu")
    last.load_state_dict(_checkpoint.model_state(saved, info_last.path))
    assert checkpoints and info.path != info_last.path  # the test tells the two apart
    outputs = trainer.predict(HighestLossIsBest(), PredictData(batch_size=5), checkpoint="best")
    assert torch.equal(torch.cat(outputs), expected(best, 5))
    outputs = trainer.predict(HighestLossIsBest(), PredictData(batch_size=5), checkpoint="last")
    assert torch.equal(torch.cat(outputs), expected(last, 5))


@pytest.mark.slow
def test_two_ranks_gather_every_sample_once_in_order(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        str(JOB),
        str(tmp_path),
    ]
    done = subprocess.run(
        command, env=job_environment(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    model = Regressor()
    model.setup()
    # by hand, as the ranks formed their batches: rank r holds samples r, r + 2, ... (no
    # padding: rank 1 has one fewer), in batches of 4, each computed in one matmul
    x, rows = inputs(), torch.empty(SAMPLES, 3)
    with torch.no_grad():
        for rank in (0, 1):
            shard = torch.arange(rank, SAMPLES, 2)
            for batch in shard.split(4):
                rows[batch] = model.net(x[batch])
    for rank in (0, 1):
        outputs = torch.load(tmp_path / f"rank-{rank}.pt", weights_only=True)
        assert [len(o) for o in outputs] == [4] * 9 + [1], rank
        assert torch.equal(torch.cat(outputs), rows), rank
    assert not (tmp_path / "run").exists()
    assert SAMPLES % 2 == 1


class NoPredict(Model):
    def setup(self) -> None:
        self.net = torch.nn.Linear(5, 3)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        raise AssertionError


def test_predict_step_not_overridden_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="override predict_step"):
        Trainer(tmp_path / "r", total=1, devices="cpu").predict(
            NoPredict(), PredictData(), checkpoint=None
        )


def test_add_predict_refuses_drop_last() -> None:
    data = PredictData()
    with pytest.raises(ConfigurationError, match="drop_last=False"):
        data.add_predict(TensorDataset(inputs()), DataLoaderParams(batch_size=4, drop_last=True))


def test_in_memory_model_without_networks_is_set_up(tmp_path: Path) -> None:
    outputs = Trainer(tmp_path / "absent", total=1, devices="cpu", progress=False).predict(
        Regressor(), PredictData(batch_size=4), checkpoint=None
    )
    reference = Regressor()
    reference.setup()  # seeded: the same weights predict's setup() made
    assert torch.equal(torch.cat(outputs), expected(reference))
    assert not (tmp_path / "absent").exists()
