"""``Settings``: what a :class:`~helios.trainer.Trainer` was asked to do, validated once.

Every argument of the trainer is checked here, when the trainer is made, so a mistake is
reported before any process starts. Arguments that would silently override each other are
refused with an error naming both (Lightning Fabric's ``connector.py`` does the same).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from helios.core import CheckpointStore, ConfigurationError, DistributedContext, MetricLogger
from helios.trainer._fsdp import FSDP, resolve_strategy

__all__ = [
    "COMPILE_OPTIONS",
    "DEFAULT_KEEP_CHECKPOINTS",
    "DEFAULT_TIMEOUT",
    "NON_FINITE",
    "PRECISIONS",
    "SAFE_TO_CHANGE_ON_RESUME",
    "CheckpointStoreFactory",
    "Devices",
    "MetricLoggerFactory",
    "Settings",
]

PRECISIONS = ("32", "bf16", "16-mixed")
NON_FINITE = ("stop", "skip", "ignore")
DEFAULT_KEEP_CHECKPOINTS = 3
DEFAULT_TIMEOUT = timedelta(minutes=30)
SAFE_TO_CHANGE_ON_RESUME = (
    "trainer.total",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "trainer.valid_every",
    "trainer.keep_checkpoints",
    "trainer.keep_best",
    "trainer.async_checkpoints",
    "trainer.progress",
    "trainer.tensorboard",
    "trainer.exit_on_signal",
    "trainer.timeout",
    "trainer.devices",
    "trainer.backend",
    "trainer.resume",
    "trainer.dry_run",
    "trainer.track_performance",
    "trainer.non_finite",
)
"""Config keys a resumed run may change without ``allow_change``: how long, how often to log,
validate and checkpoint, how many checkpoints to keep, what is measured, and where it runs (the
sampler resumes on another number of processes) -- none changes what a step computes.
``non_finite`` changes only what happens after a loss is already NaN or infinite (resuming a run
stopped by a NaN with ``"skip"`` is the usual reason)."""
Devices = Literal["auto", "cpu"] | int | Sequence[int]
CheckpointStoreFactory = Callable[[Path], CheckpointStore]
"""Builds the store in each process; given the run's checkpoint folder, ``run_dir/checkpoints``."""
MetricLoggerFactory = Callable[[Path], MetricLogger]
"""Builds the logger on global rank 0; given the run folder, ``run_dir``."""


def _positive(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive int" + (" or None" if allow_none else "")
        raise ConfigurationError(f"{name} must be {expected}, got {value!r}")


def _check_devices(devices: object) -> None:
    if devices in ("auto", "cpu"):
        return
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1:
            raise ConfigurationError(f"devices must be at least 1, got {devices}")
        return
    if (
        isinstance(devices, Sequence)
        and not isinstance(devices, str)
        and devices
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
        and len(set(devices)) == len(devices)
    ):
        return
    raise ConfigurationError(
        "devices must be 'auto', 'cpu', a number of processes or a list of distinct GPU "
        f"ids, got {devices!r}"
    )


COMPILE_OPTIONS = ("mode", "dynamic", "fullgraph", "backend", "options", "regional")
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _optional_bool(value: object) -> bool:
    return value is None or isinstance(value, bool)


def _check_compile(value: object) -> None:
    """``compile`` is a bool or a dict of ``torch.compile``'s options (and ``regional``)."""
    if isinstance(value, bool):
        return
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"compile must be True, False or a dict of torch.compile options "
            f"{COMPILE_OPTIONS}, got {value!r}"
        )
    unknown = sorted(str(key) for key in value if key not in COMPILE_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"compile has unknown option(s) {unknown}; expected some of {COMPILE_OPTIONS}"
        )
    expected = {
        "mode": (value.get("mode") in COMPILE_MODES, f"one of {COMPILE_MODES}"),
        "dynamic": (_optional_bool(value.get("dynamic")), "True, False or None"),
        "fullgraph": (isinstance(value.get("fullgraph", False), bool), "True or False"),
        "regional": (_optional_bool(value.get("regional")), "True, False or None"),
        "backend": (
            isinstance(value.get("backend", ""), str) or callable(value["backend"]),
            "the name of a torch.compile backend or a backend callable",
        ),
        "options": (isinstance(value.get("options", {}), Mapping), "a dict"),
    }
    for option, (good, what) in expected.items():
        if not good:
            raise ConfigurationError(f"compile[{option!r}] must be {what}, got {value[option]!r}")
    if value.get("mode") not in (None, "default") and "options" in value:
        raise ConfigurationError(
            f"compile['mode']={value['mode']!r} and compile['options'] conflict "
            "(torch.compile takes one or the other)"
        )


def _conflicts(name: str, given: object, others: dict[str, tuple[object, object]]) -> None:
    """Refuse ``name`` together with any of ``others`` (name: (value, default)) not at default."""
    if given is None:
        return
    for other, (value, default) in others.items():
        if value != default:
            raise ConfigurationError(
                f"{name}= and {other}={value!r} conflict: {other} configures what the trainer "
                f"builds itself, and {name} replaces that; configure your {name} instead, or "
                f"leave {name} unset"
            )


@dataclasses.dataclass(frozen=True)
class Settings:
    """The trainer's arguments (see :class:`~helios.trainer.Trainer` for each one).

    Raises:
        ConfigurationError: a value the trainer cannot work with, or two that conflict.
    """

    run_dir: Path
    unit: Literal["epoch", "iteration"]
    total: int
    valid_every: int | None
    checkpoint_every: int | None
    log_every: int
    accumulate: int
    precision: Literal["32", "bf16", "16-mixed"]
    clip_grad_norm: float | None
    early_stop_patience: int | None
    seed: int
    deterministic: bool
    devices: Devices
    backend: Literal["auto", "nccl", "gloo"]
    tensorboard: bool | None
    progress: bool | None
    resume: str
    keep_checkpoints: int | None
    keep_best: int | None
    async_checkpoints: bool
    exit_on_signal: bool
    timeout: timedelta
    checkpoint_store: CheckpointStore | CheckpointStoreFactory | None
    metric_logger: MetricLogger | MetricLoggerFactory | None
    distributed: DistributedContext | None
    callbacks: tuple[Any, ...] = ()
    dry_run: int | None = None
    config: dict[str, Any] | None = None
    allow_change: tuple[str, ...] = ()
    config_dir: Path | None = None
    non_finite: Literal["stop", "skip", "ignore"] = "stop"
    track_performance: bool = True
    hparams: Mapping[str, Any] | None = None
    compile: bool | Mapping[str, Any] = False
    strategy: str | FSDP = "auto"

    def __post_init__(self) -> None:
        """Check every value, then the combinations."""
        self._check_values()
        self._check_reporting()
        self._check_seams()
        _conflicts(
            "distributed",
            self.distributed,
            {
                "devices": (self.devices, "auto"),
                "backend": (self.backend, "auto"),
                "timeout": (self.timeout, DEFAULT_TIMEOUT),
            },
        )
        _conflicts(
            "checkpoint_store",
            self.checkpoint_store,
            {
                "keep_checkpoints": (self.keep_checkpoints, DEFAULT_KEEP_CHECKPOINTS),
                "keep_best": (self.keep_best, None),
                "async_checkpoints": (self.async_checkpoints, False),
            },
        )
        _conflicts("metric_logger", self.metric_logger, {"tensorboard": (self.tensorboard, None)})

    def _check_values(self) -> None:
        if self.unit not in ("epoch", "iteration"):
            raise ConfigurationError(f"unit must be 'epoch' or 'iteration', got {self.unit!r}")
        _positive("total", self.total)
        _positive("valid_every", self.valid_every, allow_none=True)
        _positive("checkpoint_every", self.checkpoint_every, allow_none=True)
        _positive("log_every", self.log_every)
        _positive("accumulate", self.accumulate)
        _positive("early_stop_patience", self.early_stop_patience, allow_none=True)
        _positive("keep_checkpoints", self.keep_checkpoints, allow_none=True)
        _positive("dry_run", self.dry_run, allow_none=True)
        keep_best = self.keep_best
        if keep_best is not None and (isinstance(keep_best, bool) or keep_best < 0):
            raise ConfigurationError(f"keep_best must be >= 0 or None, got {keep_best!r}")
        if self.precision not in PRECISIONS:
            raise ConfigurationError(
                f"precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        clip = self.clip_grad_norm
        if clip is not None and (
            isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0
        ):
            raise ConfigurationError(
                f"clip_grad_norm must be a positive number or None, got {clip!r}"
            )
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ConfigurationError(
                f"backend must be 'auto', 'nccl' or 'gloo', got {self.backend!r}"
            )
        _check_devices(self.devices)
        _check_compile(self.compile)
        self._check_strategy()
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigurationError(f"seed must be an int in [0, 2**32), got {seed!r}")
        resume = self.resume
        if resume not in ("auto", "never") and not (
            Path(resume).is_file() or (Path(resume) / "manifest.json").is_file()
        ):
            raise ConfigurationError(
                f"resume must be 'auto', 'never' or the path of a checkpoint file (or of a "
                f"sharded checkpoint's folder); {resume!r} is not a file (nor such a folder)"
            )

    def _check_reporting(self) -> None:
        if self.non_finite not in NON_FINITE:
            raise ConfigurationError(
                f"non_finite must be one of {NON_FINITE}, got {self.non_finite!r}"
            )
        if not isinstance(self.track_performance, bool):
            raise ConfigurationError(
                f"track_performance must be True or False, got {self.track_performance!r}"
            )
        hparams = self.hparams
        if hparams is not None and (
            not isinstance(hparams, Mapping) or not all(isinstance(k, str) for k in hparams)
        ):
            raise ConfigurationError(
                f"hparams must be a dict of str names to values, or None, got {hparams!r}"
            )

    def _check_strategy(self) -> None:
        if resolve_strategy(self.strategy) is not None and self.precision == "16-mixed":
            raise ConfigurationError(
                "precision='16-mixed' and strategy='fsdp' conflict: FSDP2 shards the "
                "gradients a GradScaler would unscale; use precision='bf16' (bfloat16 "
                "parameters, float32 gradient reduction) or '32'"
            )

    @property
    def fsdp(self) -> FSDP | None:
        """The FSDP settings when ``strategy`` shards the networks, else ``None`` (DDP)."""
        return resolve_strategy(self.strategy)

    def _check_seams(self) -> None:
        logger, store = self.metric_logger, self.checkpoint_store
        if logger is not None and not (isinstance(logger, MetricLogger) or callable(logger)):
            raise ConfigurationError(
                "metric_logger does not implement helios.core.MetricLogger (nor is it a "
                "factory: a callable taking the run folder)"
            )
        if store is not None and not (isinstance(store, CheckpointStore) or callable(store)):
            raise ConfigurationError(
                "checkpoint_store does not implement helios.core.CheckpointStore (nor is it a "
                "factory: a callable taking the checkpoint folder)"
            )
        if self.distributed is not None and not isinstance(self.distributed, DistributedContext):
            raise ConfigurationError(
                "distributed does not implement helios.core.DistributedContext"
            )

    @classmethod
    def of_run_dir(cls, run_dir: object, **values: Any) -> Settings:
        """Settings for the run folder ``run_dir`` (a str or os.PathLike) and ``values``."""
        if not isinstance(run_dir, str | os.PathLike) or not os.fspath(run_dir):
            raise ConfigurationError(
                f"run_dir must be the path of a folder (a str or os.PathLike), got {run_dir!r}"
            )
        resume = values.pop("resume")
        return cls(run_dir=Path(run_dir), resume=os.fspath(resume), **values)

    @property
    def checkpoint_dir(self) -> Path:
        """The folder of the default checkpoint store (and what a store factory is given)."""
        return self.run_dir / "checkpoints"

    @property
    def tensorboard_on(self) -> bool:
        """Whether the default loggers include TensorBoard."""
        return self.tensorboard is not False
