"""Exact resume with ``compile``: stopped by SIGTERM mid-epoch, resumed in a fresh process.

The straight run and the stopped one train in this process; the resumed one in a fresh process,
as after a pre-emption, so nothing compiled survives the stop. The backend is ``"aot_eager"``
(dynamo's capture and AOTAutograd without inductor's C++ code generation, which takes minutes
on two shared cores). Then a compiled run on two Gloo processes (DDP) resumes a run stopped
in this process (elastically: the data position is counted in global samples), trains and
checkpoints; one launch of two processes, where a stopped run of two more would double the
cost of the test and show nothing the tests above do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from resume_checks import assert_same_training, final_checkpoint, run_script
from toy_training import ToyData, ToyModel, run

from helios.trainer import RESUMABLE_EXIT_CODE, Trainer

pytestmark = pytest.mark.slow  # fresh processes that compile

COMPILE = {"backend": "aot_eager"}


def settings(run_dir: Path, **extra: Any) -> dict[str, Any]:
    # 12 steps an epoch; stopped at step 13: epoch 1, batch 1, no checkpoint step
    return {
        "run_dir": str(run_dir),
        "unit": "iteration",
        "total": 18,
        "checkpoint_every": 5,
        "valid_every": 9,
        "log_every": 1,
        "seed": 3,
        "compile": COMPILE,
        **extra,
    }


def test_sigterm_then_resume_in_a_fresh_process_is_identical(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    straight, stopped = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("stopped")
    torch._dynamo.reset()
    run(settings(straight))
    torch._dynamo.reset()
    with pytest.raises(SystemExit) as exited:
        run(settings(stopped, sigterm_at=13))
    assert exited.value.code == RESUMABLE_EXIT_CODE
    state = final_checkpoint(stopped)["training_state"]
    assert (state["step"], state["batch_in_epoch"]) == (13, 1)
    run_script("toy_training.py", settings(stopped))
    assert_same_training(straight, stopped)


def test_compiled_ddp_on_two_processes_resumes_and_trains(tmp_path: Path) -> None:
    job = settings(tmp_path, total=6, checkpoint_every=2, valid_every=3)
    del job["run_dir"]
    job.update(progress=False, tensorboard=False)
    first = Trainer(tmp_path, exit_on_signal=False, **job).fit(ToyModel(sigterm_at=2), ToyData())
    assert first.interrupted
    model = ToyModel()
    result = Trainer(tmp_path, devices=2, **job).fit(model, ToyData())
    assert result.complete
    assert result.resumed_from is not None
    assert result.resumed_from.name == "step-00000002.pt"
    assert result.steps_trained == 4
    checkpoint = final_checkpoint(tmp_path)
    assert checkpoint["trainer"]["world_size"] == 2
    saved = checkpoint["model"]["networks"]["net"]
    assert list(saved) == ["0.weight", "0.bias", "3.weight", "3.bias"]  # DDP(compiled): plain
    assert all(torch.equal(saved[k], v) for k, v in model.net.state_dict().items())
