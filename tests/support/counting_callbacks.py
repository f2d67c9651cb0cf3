"""Callbacks that count collectives in each rank, for tests that spawn the ranks.

They live here, not in a test file, because spawned ranks unpickle them by module name.
"""

from __future__ import annotations

import json
from typing import Any

from helios.core import Model
from helios.trainer import Callback, TrainerState


class CountAllReduces(Callback):
    def on_training_start(self, state: TrainerState, model: Model) -> None:
        import torch.distributed as dist

        self.calls, self.mark = 0, 0
        self.per_log: list[int] = []
        self.per_validation: list[int] = []
        self.original = dist.all_reduce

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return self.original(*args, **kwargs)

        dist.all_reduce = counting

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        self.mark = self.calls

    def on_log(self, state: TrainerState, model: Model) -> None:
        self.per_log.append(self.calls - self.mark)

    def on_validation_start(self, state: TrainerState, model: Model) -> None:
        self.mark = self.calls

    def on_validation_end(self, state: TrainerState, model: Model) -> None:
        self.per_validation.append(self.calls - self.mark)

    def on_fit_exit(self, state: TrainerState, model: Model) -> None:
        import torch.distributed as dist

        dist.all_reduce = self.original
        counts = {"per_log": self.per_log, "per_validation": self.per_validation}
        path = state.settings.run_dir / f"all-reduces-{dist.get_rank()}.json"
        path.write_text(json.dumps(counts))
