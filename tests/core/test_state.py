"""TrainingState (helios.core._state)."""

from __future__ import annotations

import pytest

from helios.core import ResumeError, TrainingState


def test_round_trip() -> None:
    state = TrainingState(epoch=2, step=30, batch_in_epoch=5, batches=60, validation_cycles=3)
    fresh = TrainingState()
    fresh.load_state_dict(state.state_dict())
    assert fresh == state


def test_missing_or_unknown_fields_are_refused() -> None:
    state = TrainingState().state_dict()
    del state["step"]
    with pytest.raises(ResumeError, match="missing \\['step'\\]"):
        TrainingState().load_state_dict(state)
    with pytest.raises(ResumeError, match="unexpected \\['speed'\\]"):
        TrainingState().load_state_dict({**TrainingState().state_dict(), "speed": 1})


def test_non_int_field_is_refused_and_nothing_changes() -> None:
    state = TrainingState(step=4)
    with pytest.raises(ResumeError, match="epoch must be an int"):
        state.load_state_dict({**TrainingState().state_dict(), "epoch": "3"})
    assert state.step == 4
