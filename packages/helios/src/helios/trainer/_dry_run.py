"""Dry runs: a few steps of training, a validation and the test pass, leaving nothing behind.

A dry run is an ordinary ``fit`` with other settings, not a flag the loop consults: the run
folder is a fresh temporary folder (so the default store, loggers, lock and log files all live
there), the seams are Helios' defaults (a user's store or logger is not written to), training
stops after ``dry_run`` optimizer steps and starts fresh (``resume="never"``). After ``fit``
the test pass runs on the model as training left it. The folder is then deleted; ``run_dir`` is
never touched.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from helios.core import DataSource, Model
from helios.trainer._fit import FitResult
from helios.trainer._settings import DEFAULT_KEEP_CHECKPOINTS, Settings

if TYPE_CHECKING:
    from helios.trainer._trainer import Trainer

__all__ = ["dry_fit", "dry_settings"]


def dry_settings(settings: Settings, folder: Path) -> Settings:
    """``settings`` for a dry run in ``folder``: ``dry_run`` steps, fresh, default seams."""
    assert settings.dry_run is not None
    return dataclasses.replace(
        settings,
        run_dir=folder,
        unit="iteration",
        total=settings.dry_run,
        valid_every=None,  # training always ends with a validation
        checkpoint_every=None,
        resume="never",
        keep_checkpoints=DEFAULT_KEEP_CHECKPOINTS,
        keep_best=None,
        async_checkpoints=False,
        tensorboard=False,
        checkpoint_store=None,
        metric_logger=None,
        dry_run=None,
    )


def dry_fit(trainer: Trainer, model: Model, data: DataSource) -> FitResult:
    """Train ``trainer.settings.dry_run`` steps, validate and test, in a temporary folder.

    Returns:
        The dry ``fit``'s result (``steps_trained``, the final state), without checkpoint paths:
        they were deleted with the folder.
    """
    folder = Path(tempfile.mkdtemp(prefix="helios-dry-run-"))
    try:
        dry = copy.copy(trainer)
        dry.settings = dry_settings(trainer.settings, folder)
        result = dry.fit(model, data)
        data.setup()
        if data.test_dataloader() is not None:
            dry.test(model, data, checkpoint=None)
        return dataclasses.replace(result, resumed_from=None, checkpoint=None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
