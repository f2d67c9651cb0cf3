"""The run's hyper-parameters: the trainer's settings, the model's and the user's, in one dict.

Written at the start of every ``fit`` (fresh or resumed) to the metric logger -- TensorBoard's
HPARAMS tab and ``metrics.hparams.json`` -- so the file always holds the settings of the latest
``fit`` (a run extended from ``total=3`` to ``total=6`` says 6). They are kept in each checkpoint
(the ``trainer`` part); a resumed run whose hyper-parameters differ warns with each difference,
because such a run is not the one that would have run without stopping.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from helios.core import Model
from helios.trainer._settings import Settings

__all__ = ["compare", "run_hyperparameters"]

_MISSING = "<not set>"


def _plain(value: Any) -> bool | int | float | str | None:
    """A value a checkpoint (``weights_only``) and JSON hold as it is; anything else as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def run_hyperparameters(settings: Settings, model: Model, world_size: int) -> dict[str, Any]:
    """The trainer's settings, then ``Model.hparams``, then ``Trainer(hparams=)`` (last wins)."""
    found: dict[str, Any] = {
        "unit": settings.unit,
        "total": settings.total,
        "valid_every": settings.valid_every,
        "checkpoint_every": settings.checkpoint_every,
        "log_every": settings.log_every,
        "accumulate": settings.accumulate,
        "precision": settings.precision,
        "clip_grad_norm": settings.clip_grad_norm or 0.0,
        "seed": settings.seed,
        "non_finite": settings.non_finite,
        "world_size": world_size,
        "model": type(model).__name__,
    }
    found.update(getattr(model, "hparams", None) or {})
    found.update(settings.hparams or {})
    return {str(name): _plain(value) for name, value in found.items()}


def compare(
    saved: Mapping[str, Any], now: Mapping[str, Any], logger: logging.Logger, checkpoint: object
) -> None:
    """Warn with every hyper-parameter of this run that differs from the checkpoint's.

    A longer ``total`` (extending a finished run) is reported as information only: the steps
    already taken are the same.
    """
    if not saved:
        return  # a checkpoint of a Helios that did not keep them
    for name in sorted(set(saved) | set(now)):
        before, after = saved.get(name, _MISSING), now.get(name, _MISSING)
        if before == after:
            continue
        if name == "total":
            logger.info("total changed from %s to %s since %s", before, after, checkpoint)
            continue
        logger.warning(
            "hyper-parameter %r was %r in %s and is %r now: the resumed run is not the run "
            "that would have gone on without stopping (exactness is not promised)",
            name,
            before,
            checkpoint,
            after,
        )
