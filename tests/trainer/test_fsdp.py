"""``strategy="fsdp"`` on 2 Gloo processes: it trains as DDP does, and keeps the resume promise.

One straight FSDP2 run and one straight DDP run (same seed, same global batches, gradient
accumulation and clipping on) are shared by every test. A second FSDP2 run is crashed three
times in a row -- SIGKILL of rank 1 between checkpoints, an exception on rank 1, SIGTERM to the
launcher -- resumed each time in fresh processes, and ends bitwise identical to the straight
run. Checkpoints of one strategy resume under the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnxruntime
import pytest
import torch
from fsdp_job import IndexedData, RecordingModel, run, samples_seen
from resume_checks import (
    SUPPORT,
    assert_same_training,
    final_checkpoint,
    metric_series,
    run_script,
)
from state_checks import assert_nested_equal

from helios.ckpt import DirectoryCheckpointStore
from helios.trainer import RESUMABLE_EXIT_CODE, Trainer, _checkpoint

# Every test launches 2 ranks at least once (and the first also starts the two straight runs).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
LIMIT = 600  # seconds for one launch of 2 ranks (a loaded 2-core machine takes minutes)

# batch 4 per rank and accumulate 2: 12 batches, 6 steps an epoch on 2 ranks; 10 steps in all.
SETTINGS: dict[str, Any] = {
    "devices": 2,
    "unit": "iteration",
    "total": 10,
    "checkpoint_every": 2,
    "keep_checkpoints": None,
    "accumulate": 2,
    "clip_grad_norm": 0.5,
    "batch_size": 4,
    "log_every": 1,
    "seed": 5,
}


def settings(run_dir: Path, **extra: Any) -> dict[str, Any]:
    return {"run_dir": str(run_dir), "strategy": "fsdp", **SETTINGS, **extra}


def checkpoint_of(run_dir: Path, step: int) -> Path:
    """The checkpoint of ``step``: a file (DDP, one process) or a sharded folder (FSDP)."""
    folder = run_dir / "checkpoints"
    for path in (folder / f"step-{step:08d}.pt", folder / f"step-{step:08d}"):
        if path.exists():
            return path
    raise AssertionError(
        f"no checkpoint of step {step}: {sorted(p.name for p in folder.iterdir())}"
    )


def final_state(run_dir: Path) -> dict[str, Any]:
    """The newest checkpoint, read as the trainer reads it (a sharded one in the file layout)."""
    return _checkpoint.read(final_checkpoint(run_dir), run_dir)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = {name: tmp_path_factory.mktemp(f"straight-{name}") for name in ("fsdp", "ddp")}
    run(settings(runs["fsdp"]))
    run(settings(runs["ddp"], strategy="ddp"))
    return runs


def assert_close_training(run_a: Path, run_b: Path, *, after: int = 0) -> None:
    """Same positions; parameters, optimizer state and losses equal within fp32 tolerance.

    ``run_b`` may have resumed from a checkpoint of step ``after`` kept elsewhere: only the
    metrics logged after it are compared.
    """
    a, b = final_state(run_a), final_state(run_b)
    assert_nested_equal(a["training_state"], b["training_state"], "training_state")
    assert_nested_equal(a["data"], b["data"], "data")
    for name, tensor in a["model"]["networks"]["net"].items():
        torch.testing.assert_close(tensor, b["model"]["networks"]["net"][name], msg=name)
    state_a = a["model"]["optimizers"]["optimizer"]
    state_b = b["model"]["optimizers"]["optimizer"]
    assert state_a["param_groups"] == state_b["param_groups"]
    assert state_a["state"].keys() == state_b["state"].keys() and state_a["state"]
    for index, slots in state_a["state"].items():
        for slot, tensor in slots.items():
            torch.testing.assert_close(tensor, state_b["state"][index][slot], msg=slot)
    for metric in ("train/loss", "valid/loss"):
        series_a = [(s, v) for s, v in metric_series(run_a, metric) if s > after]
        series_b = metric_series(run_b, metric)
        assert [s for s, _ in series_a] == [s for s, _ in series_b], metric
        assert series_a, metric
        torch.testing.assert_close([v for _, v in series_a], [v for _, v in series_b])


def test_fsdp_trains_as_ddp_does(straight: dict[str, Path]) -> None:
    log = (straight["fsdp"] / "logs" / "rank-0.log").read_text()
    assert "FSDP: network 'net' sharded over mesh (2,) in 2 unit(s)" in log
    shards = sorted(p.name for p in checkpoint_of(straight["fsdp"], 10).iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp", "manifest.json"]
    assert_close_training(straight["fsdp"], straight["ddp"])
    assert final_checkpoint(straight["fsdp"])["training_state"]["step"] == 10


def test_sigkill_exception_and_sigterm_then_resume_is_identical(
    straight: dict[str, Path], tmp_path: Path
) -> None:
    # SIGKILL of rank 1 after step 3: the run resumes from step 2.
    run_script("fsdp_job.py", settings(tmp_path, kill_at=3, fail_rank=1), expect=1, timeout=LIMIT)
    assert final_checkpoint(tmp_path)["training_state"]["step"] == 2
    # An exception on rank 1 after step 5: no checkpoint; the run resumes from step 4.
    output = run_script(
        "fsdp_job.py", settings(tmp_path, fail_at=5, fail_rank=1), expect=1, timeout=LIMIT
    )
    assert "rank 1" in output
    assert final_checkpoint(tmp_path)["training_state"]["step"] == 4
    # SIGTERM to the launching process after step 7: a checkpoint of step 7, status 75.
    run_script(
        "fsdp_job.py",
        settings(tmp_path, sigterm_at=7, fail_rank=0, signal_parent=True),
        expect=RESUMABLE_EXIT_CODE,
        timeout=LIMIT,
    )
    assert final_checkpoint(tmp_path)["training_state"]["step"] == 7
    run_script("fsdp_job.py", settings(tmp_path), timeout=LIMIT)
    assert_same_training(straight["fsdp"], tmp_path)
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    assert [info.step for info in store.list()] == [2, 4, 6, 7, 8, 10]


@pytest.mark.parametrize(("source", "target"), [("ddp", "fsdp"), ("fsdp", "ddp")])
def test_a_checkpoint_of_one_strategy_resumes_under_the_other(
    straight: dict[str, Path], tmp_path: Path, source: str, target: str
) -> None:
    start = checkpoint_of(straight[source], 4)
    run(settings(tmp_path, strategy=target, resume=str(start)))
    assert_close_training(straight[target], tmp_path, after=4)
    log = (tmp_path / "logs" / "rank-0.log").read_text()
    assert f"resumed from {start} at step 4" in log


def test_test_and_export_read_an_fsdp_checkpoint_in_one_process(
    straight: dict[str, Path], tmp_path: Path
) -> None:
    run_dir = straight["fsdp"]
    trainer = Trainer(run_dir, total=1, progress=False, tensorboard=False)
    metrics = trainer.test(RecordingModel(str(tmp_path)), IndexedData(batch_size=4), "last")
    assert 0.0 <= metrics["accuracy"] <= 1.0
    onnx = tmp_path / "net.onnx"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "helios.trainer",
            "export",
            str(checkpoint_of(run_dir, 10)),
            "--model",
            "fsdp_job:RecordingModel",
            "--model-args",
            json.dumps({"run_dir": str(tmp_path)}),
            "--out",
            str(onnx),
        ],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SUPPORT)},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "max" in completed.stdout.lower()  # the onnxruntime parity report
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 6)
    (logits,) = session.run(None, {"x": x.numpy()})
    weights = final_state(run_dir)["model"]["networks"]["net"]
    network = torch.nn.Sequential(
        torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 1)
    ).eval()
    network.load_state_dict(weights)
    torch.testing.assert_close(torch.from_numpy(logits), network(x).detach(), atol=1e-5, rtol=1e-5)


def test_elastic_resume_from_two_processes_on_one(
    straight: dict[str, Path], tmp_path: Path
) -> None:
    start = checkpoint_of(straight["fsdp"], 2)  # epoch 0 after 4 batches of each rank
    run(settings(tmp_path, devices=1, resume=str(start)))
    seen = samples_seen(straight["fsdp"], 0, before=4) + samples_seen(tmp_path, 0)
    assert sorted(seen) == list(range(96))  # each sample of the epoch once
    log = (tmp_path / "logs" / "rank-0.log").read_text()
    assert "RNG streams restart from the seed" in log
    assert final_checkpoint(tmp_path)["training_state"]["step"] == 10


def test_elastic_resume_from_one_process_on_two(tmp_path: Path) -> None:
    single, double = tmp_path / "single", tmp_path / "double"
    run(settings(single, devices=1, total=2))  # 2 steps of 2 batches of 4: 16 samples seen
    run(settings(double, resume=str(checkpoint_of(single, 2))))
    seen = samples_seen(single, 0) + samples_seen(double, 0)
    assert sorted(seen) == list(range(96))
    log = (double / "logs" / "rank-0.log").read_text()
    assert "RNG streams restart from the seed" in log
    assert "sharded over mesh (2,)" in log
    assert final_checkpoint(double)["training_state"]["step"] == 10


def test_a_store_without_sharded_saves_gets_the_gathered_state_from_rank_0(
    straight: dict[str, Path], tmp_path: Path
) -> None:
    run(settings(tmp_path, file_only_store=True))
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == [f"step-{step:08d}.pt" for step in (2, 4, 6, 8, 10)]
    gathered, sharded = final_state(tmp_path), final_state(straight["fsdp"])
    for part in ("model", "training_state", "data", "rng", "epoch_start_rng", "train_means"):
        assert_nested_equal(gathered[part], sharded[part], part)
