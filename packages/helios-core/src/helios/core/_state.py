"""``TrainingState``: where a run is, owned by the trainer and saved in every checkpoint."""

from __future__ import annotations

import dataclasses
from typing import Any

from helios.core._errors import ResumeError

__all__ = ["TrainingState"]


@dataclasses.dataclass
class TrainingState:
    """The position of a training run, in every unit the trainer counts.

    Attributes:
        epoch: the current epoch, from 0.
        step: optimizer steps taken so far (with gradient accumulation, one step per
            ``accumulate`` batches).
        batch_in_epoch: batches of the current epoch already trained on.
        batches: batches trained on since the start of the run.
        validation_cycles: validation passes completed.
        early_stop_count: validation cycles in a row whose metrics did not improve.
    """

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    batches: int = 0
    validation_cycles: int = 0
    early_stop_count: int = 0

    def state_dict(self) -> dict[str, Any]:
        """The fields as a plain dict of ints."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the fields from :meth:`state_dict`'s output.

        Raises:
            ResumeError: a field is missing, unknown or not an int.
        """
        names = {field.name for field in dataclasses.fields(self)}
        missing = names - state_dict.keys()
        unexpected = state_dict.keys() - names
        if missing or unexpected:
            raise ResumeError(
                "TrainingState does not match the saved state: "
                f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        for name in names:
            value = state_dict[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ResumeError(f"TrainingState.{name} must be an int, got {value!r}")
        for name in names:
            setattr(self, name, state_dict[name])
