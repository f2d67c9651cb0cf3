"""helios.trainer: the ``Trainer`` that drives a ``Model`` over a ``DataModule``.

Also the ``helios`` command (``helios --help``). The trainer talks to checkpoints, logging,
processes and data only through the protocols of ``helios.core``; the defaults come from the
other Helios packages and each can be replaced by an object of the user's.
"""

from __future__ import annotations

from helios.trainer._callbacks import Callback, EarlyStopping, TrainerState, TrainingProgressBar
from helios.trainer._config import ConfiguredRun, from_config
from helios.trainer._fit import FitResult
from helios.trainer._fsdp import FSDP
from helios.trainer._non_finite import NonFiniteLossError, NonFiniteLossGuard
from helios.trainer._performance import PerformanceMonitor
from helios.trainer._settings import (
    SAFE_TO_CHANGE_ON_RESUME,
    CheckpointStoreFactory,
    MetricLoggerFactory,
)
from helios.trainer._signals import (
    RESUMABLE_EXIT_CODE,
    SAME_REQUEST_SECONDS,
    STOP_SIGNALS,
    TrainingAbortedError,
)
from helios.trainer._trainer import Trainer

__all__ = [
    "FSDP",
    "RESUMABLE_EXIT_CODE",
    "SAFE_TO_CHANGE_ON_RESUME",
    "SAME_REQUEST_SECONDS",
    "STOP_SIGNALS",
    "Callback",
    "CheckpointStoreFactory",
    "ConfiguredRun",
    "EarlyStopping",
    "FitResult",
    "MetricLoggerFactory",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "PerformanceMonitor",
    "Trainer",
    "TrainerState",
    "TrainingAbortedError",
    "TrainingProgressBar",
    "from_config",
]
