"""helios.log: rank-aware file logging, TensorBoard and plain metric files, progress bars.

What a run of many processes needs from logging, and nothing from ``helios.dist``: rank-aware
set-up of Python's ``logging`` (console on global rank 0, a file per rank whose every line names
its rank and node), two :class:`~helios.core.MetricLogger` backends that resume without losing or
repeating a step (TensorBoard and JSON lines), a group that averages metrics across ranks through
the core :class:`~helios.core.DistributedContext` before they are logged, and tqdm progress bars
that start at the resumed position.
"""

from __future__ import annotations

from helios.log._group import MetricLoggerGroup
from helios.log._logging import LOGGER_NAME, log_exception, setup_logging, teardown_logging
from helios.log._metrics import reduce_metrics
from helios.log._metrics_file import MetricsFileLogger
from helios.log._progress import ProgressBar
from helios.log._tensorboard import TensorBoardLogger

__all__ = [
    "LOGGER_NAME",
    "MetricLoggerGroup",
    "MetricsFileLogger",
    "ProgressBar",
    "TensorBoardLogger",
    "log_exception",
    "reduce_metrics",
    "setup_logging",
    "teardown_logging",
]
