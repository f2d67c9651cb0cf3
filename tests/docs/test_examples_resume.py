"""The examples that stop and resume in fresh processes.

A raw loop with the resumable sampler, and a stateful callback (an EMA of the weights) stopped
by SIGTERM. A module of their own, so pytest-xdist can run them beside test_examples.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from example_runs import run_example
from state_checks import assert_nested_equal

from helios.ckpt import DirectoryCheckpointStore

# ---- the resumable sampler in a loop of your own ------------------------------------------


@pytest.mark.slow
def test_raw_loop_resumes_exactly_after_a_crash_with_other_workers(tmp_path: Path) -> None:
    straight = run_example("raw_loop_sampler.py", "--dir", str(tmp_path / "a"))
    crashed = run_example(
        "raw_loop_sampler.py", "--dir", str(tmp_path / "b"), "--stop-after", "20", expect=1
    )
    assert "died after 20 batches (step 20), unsaved" in crashed
    resumed = run_example("raw_loop_sampler.py", "--dir", str(tmp_path / "b"), "--workers", "2")
    assert "resumed at step 15: epoch 1, 32 samples in" in resumed  # the guide's output
    digest = re.findall(r"weights sha256: ([0-9a-f]{64})", straight)
    assert digest and digest == re.findall(r"weights sha256: ([0-9a-f]{64})", resumed)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert_nested_equal(a, b)
    assert a["data"]["epoch"] == 3 and a["data"]["consumed"] == 0  # saved as the next epoch


# ---- a stateful callback: an EMA of the weights ---------------------------------------------


def ema_of(run_dir: Path) -> dict[str, Any]:
    with DirectoryCheckpointStore(run_dir / "checkpoints", keep_last=None) as store:
        saved = store.load()
    assert saved["training_state"]["step"] == 24
    return saved["callbacks"]["WeightAverage"]


@pytest.mark.slow
def test_an_ema_callback_stopped_by_sigterm_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    run_example("ema_callback.py", str(tmp_path / "straight"))
    # step 11: epoch 1, batch 3 of 8, off the checkpoint cadence (5)
    run_example("ema_callback.py", str(tmp_path / "resumed"), "--stop-at", "11", expect=75)
    with DirectoryCheckpointStore(tmp_path / "resumed" / "checkpoints") as store:
        stopped = store.load()
    assert stopped["training_state"]["step"] == 11
    assert stopped["training_state"]["batch_in_epoch"] == 3
    assert stopped["callbacks"]["WeightAverage"]["step"] == 11
    run_example("ema_callback.py", str(tmp_path / "resumed"))  # a fresh process resumes
    straight, resumed = ema_of(tmp_path / "straight"), ema_of(tmp_path / "resumed")
    assert straight["average"].keys() == resumed["average"].keys()
    for name, value in straight["average"].items():
        assert torch.equal(value, resumed["average"][name]), name
    weights = final_model(tmp_path / "straight")["networks"]["net"]
    assert not torch.equal(weights["0.weight"], straight["average"]["0.weight"])  # an average


def final_model(run_dir: Path) -> dict[str, Any]:
    with DirectoryCheckpointStore(run_dir / "checkpoints", keep_last=None) as store:
        return store.load()["model"]
