"""helios.core: the seams, the ``Model`` base class and the shared machinery of Helios.

Everything here depends on torch and NumPy only. The other Helios packages build on it:
``helios.data``, ``helios.dist``, ``helios.ckpt``, ``helios.log`` implement its protocols, and
``helios.trainer`` drives them through those protocols alone.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from helios.core._builtin_registries import (
    LOSS_REGISTRY,
    NETWORK_REGISTRY,
    OPTIMIZER_REGISTRY,
    SCHEDULER_REGISTRY,
)
from helios.core._checks import ModelWarning, check_model_initialised, check_model_setup
from helios.core._errors import (
    CheckpointError,
    ConfigurationError,
    HeliosError,
    RegistryError,
    ResumeError,
    RunFolderLockedError,
)
from helios.core._model import ExportTarget, Model, StepOutput
from helios.core._registry import Registry
from helios.core._rng import (
    capture_rng_state,
    numpy_generator,
    restore_rng_state,
    seed_everything,
    set_deterministic,
)
from helios.core._state import TrainingState
from helios.core._weights import WEIGHTS_FORMAT, read_weights, write_weights
from helios.core.protocols import (
    CheckpointInfo,
    CheckpointStore,
    Collectives,
    DataParallel,
    DataSource,
    DistributedContext,
    MetricLogger,
    ProcessInfo,
    ShardedCheckpointStore,
    SizedIterable,
    Stateful,
)

try:
    __version__ = version("helios-core")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "LOSS_REGISTRY",
    "NETWORK_REGISTRY",
    "OPTIMIZER_REGISTRY",
    "SCHEDULER_REGISTRY",
    "WEIGHTS_FORMAT",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointStore",
    "Collectives",
    "ConfigurationError",
    "DataParallel",
    "DataSource",
    "DistributedContext",
    "ExportTarget",
    "HeliosError",
    "MetricLogger",
    "Model",
    "ModelWarning",
    "ProcessInfo",
    "Registry",
    "RegistryError",
    "ResumeError",
    "RunFolderLockedError",
    "ShardedCheckpointStore",
    "SizedIterable",
    "Stateful",
    "StepOutput",
    "TrainingState",
    "__version__",
    "capture_rng_state",
    "check_model_initialised",
    "check_model_setup",
    "numpy_generator",
    "read_weights",
    "restore_rng_state",
    "seed_everything",
    "set_deterministic",
    "write_weights",
]
