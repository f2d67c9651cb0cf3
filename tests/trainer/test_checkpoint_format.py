"""Checkpoints of the trainer's older formats still load and resume exactly.

``fixtures/helios-trainer-1/`` was written by the trainer before the redesign of issue 16 (see
``fixtures/v1_job.py``): a run of 4 steps stopped by SIGTERM after step 2. Resumed by today's
trainer it must end bitwise identical to a straight run of the same job.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from resume_checks import comparable_records, final_checkpoint
from state_checks import assert_nested_equal

from helios.trainer import Trainer

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

from v1_job import SETTINGS, TinyData, TinyModel  # noqa: E402


def test_a_format_1_checkpoint_resumes_identically(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    Trainer(straight, **SETTINGS).fit(TinyModel(), TinyData())

    resumed = tmp_path / "resumed"
    shutil.copytree(FIXTURES / "helios-trainer-1", resumed)
    result = Trainer(resumed, **SETTINGS).fit(TinyModel(), TinyData())

    assert result.resumed_from is not None and result.resumed_from.name == "step-00000002.pt"
    assert result.complete and result.steps_trained == 2
    a, b = final_checkpoint(straight), final_checkpoint(resumed)
    assert_nested_equal(a["model"], b["model"])
    assert_nested_equal(a["rng"], b["rng"])
    assert a["training_state"] == b["training_state"]
    # the validations never improve: the early-stop count went on from the fixture's 2
    assert result.state.early_stop_count == 4
    # the fixture's records were written before records carried the epoch
    without_epoch = [
        [{k: v for k, v in record.items() if k != "epoch"} for record in comparable_records(run)]
        for run in (resumed, straight)
    ]
    assert without_epoch[0] == without_epoch[1]


def test_format_1_is_upgraded_on_read_and_a_newer_format_is_refused() -> None:
    from helios.ckpt import DirectoryCheckpointStore
    from helios.core import ResumeError
    from helios.trainer._checkpoint import FORMAT, read

    with DirectoryCheckpointStore(FIXTURES / "helios-trainer-1" / "checkpoints") as store:
        raw = store.load()
    assert raw["format"] == "helios-trainer/1" and "callbacks" not in raw
    upgraded = read(raw, "fixture")
    assert upgraded["format"] == FORMAT == "helios-trainer/2"
    assert upgraded["callbacks"] == {"EarlyStopping": {"count": 2}}
    assert upgraded["training_state"] == raw["training_state"]
    with pytest.raises(ResumeError, match="newer than"):
        read({**raw, "format": "helios-trainer/99"}, "future.pt")
    with pytest.raises(ResumeError, match=r"not a checkpoint of helios\.trainer"):
        read({**raw, "format": "something-else/1"}, "other.pt")
