"""The seams between the trainer and the pieces it drives.

The :class:`~helios.trainer.Trainer` is typed only against these protocols. Helios ships one
implementation of each in a sibling package (``helios.ckpt``, ``helios.log``, ``helios.dist``,
``helios.data``), and any object of the user's that has the same methods can take its place:
no inheritance needed. Each protocol is ``runtime_checkable`` so ``isinstance(obj, Protocol)``
checks that the methods are there (not their signatures).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

__all__ = [
    "CheckpointInfo",
    "CheckpointStore",
    "Collectives",
    "DataParallel",
    "DataSource",
    "DistributedContext",
    "MetricLogger",
    "ProcessInfo",
    "ShardedCheckpointStore",
    "SizedIterable",
    "Stateful",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class Stateful(Protocol):
    """Anything whose state survives a restart, in PyTorch's own vocabulary.

    Models, optimizers, schedulers, samplers, data modules and ``TrainingState`` all speak it, so
    a checkpoint is a dict of their ``state_dict()`` outputs and resuming calls
    ``load_state_dict()`` on each. State holds tensors, numbers, strings, lists and dicts only,
    so it loads with ``torch.load(weights_only=True)``.
    """

    def state_dict(self) -> dict[str, Any]:
        """Return the state as a dict of tensors, numbers, strings, lists and dicts."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any:
        """Restore the state returned by :meth:`state_dict`."""
        ...


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint store knows of one checkpoint without loading it.

    Attributes:
        path: the checkpoint file, or the folder of a sharded checkpoint.
        step: the optimizer step it was taken at.
        epoch: the epoch it was taken in.
        metrics: the metrics given when it was saved (for "keep the best K").
        wall_time: when it was written, in seconds since the epoch.
        size: its size in bytes (of every file, for a sharded checkpoint).
        sha256: the hex SHA-256 of its bytes (of its manifest, for a sharded checkpoint).
        sharded: whether it is a sharded checkpoint: a folder of shard files written by every
            rank (see :class:`ShardedCheckpointStore`), rather than one file.
    """

    path: Path
    step: int
    epoch: int
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    wall_time: float = 0.0
    size: int = 0
    sha256: str = ""
    sharded: bool = False


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints are written, found and read back.

    Shaped after torchtitan's checkpoint storage: the trainer hands over a state dict and the
    position it belongs to, and asks for "the newest checkpoint that is good" on resume. How the
    bytes are kept safe (atomic writes, hashes, retention) is the store's business; what the
    trainer relies on is that :meth:`latest` never returns a checkpoint that fails to load.
    """

    def save(
        self,
        state: Mapping[str, Any],
        *,
        step: int,
        epoch: int,
        metrics: Mapping[str, float] | None = None,
    ) -> CheckpointInfo:
        """Write ``state`` as the checkpoint of ``step``; durable once :meth:`wait` returns."""
        ...

    def latest(self) -> CheckpointInfo | None:
        """The newest checkpoint that verifies, or ``None`` if there is none."""
        ...

    def best(self) -> CheckpointInfo | None:
        """The best verified checkpoint by the store's metric, or ``None`` without one."""
        ...

    def list(self) -> builtins.list[CheckpointInfo]:
        """Every checkpoint the store holds, oldest first."""
        ...

    def load(
        self,
        ref: CheckpointInfo | str | os.PathLike[str] | None = None,
        *,
        map_location: torch.device | str | None = None,
    ) -> dict[str, Any]:
        """Read and verify a checkpoint (the latest good one when ``ref`` is ``None``)."""
        ...

    def wait(self) -> None:
        """Block until every save started so far is durable; raise its error if one failed."""
        ...

    def close(self) -> None:
        """Finish pending saves and release resources; raise a pending save's error."""
        ...


@runtime_checkable
class ShardedCheckpointStore(CheckpointStore, Protocol):
    """A :class:`CheckpointStore` that also takes checkpoints every rank writes a part of.

    Sharded training (FSDP2) holds no full copy of the state on any rank, so a checkpoint is
    written by all ranks at once (a collective) and read back the same way, each rank filling
    its own shards; the store may reshard for another world size. Kept separate from
    :class:`CheckpointStore` so a store that writes only whole files stays small; the
    single-process :meth:`~CheckpointStore.load` of such a store returns the gathered, full
    state of a sharded checkpoint, so tools that read checkpoints need not care.
    """

    def save_sharded(
        self,
        state: Mapping[str, Any],
        *,
        step: int,
        epoch: int,
        metrics: Mapping[str, float] | None = None,
        process_group: Any = None,
        asynchronous: bool = False,
    ) -> CheckpointInfo:
        """Collective: every rank writes its part of ``state`` as the checkpoint of ``step``."""
        ...

    def load_sharded(
        self,
        ref: CheckpointInfo | str | os.PathLike[str] | None,
        state: MutableMapping[str, Any],
        *,
        process_group: Any = None,
    ) -> None:
        """Collective: fill ``state`` in place from a verified sharded checkpoint."""
        ...


@runtime_checkable
class MetricLogger(Protocol):
    """A sink for metrics keyed by the optimizer step.

    The step is the trainer's ``TrainingState.step``. After a restart the trainer calls
    :meth:`resume` with the checkpoint's step before logging anything, and the logger continues
    from there: whatever it wrote for later steps (after the checkpoint, before the crash) is
    dropped, so every step appears exactly once.
    """

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar ``metrics`` at ``step``."""
        ...

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Record a piece of text at ``step``."""
        ...

    def log_hyperparameters(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Record the run's hyper-parameters (and the metrics they led to)."""
        ...

    def resume(self, step: int) -> None:
        """Continue after ``step``: anything logged for later steps is discarded."""
        ...

    def flush(self) -> None:
        """Push buffered records to their destination."""
        ...

    def close(self) -> None:
        """Flush and release files; the logger is not used afterwards."""
        ...


@runtime_checkable
class ProcessInfo(Protocol):
    """Which process of a training group this is, and the device it trains on.

    What logging, checkpointing and progress bars need: who writes (global rank 0) and where
    tensors go. A single process is rank 0 of a group of one.
    """

    @property
    def rank(self) -> int:
        """This process's global rank."""
        ...

    @property
    def local_rank(self) -> int:
        """This process's rank on its node."""
        ...

    @property
    def node_rank(self) -> int:
        """The index of this process's node."""
        ...

    @property
    def world_size(self) -> int:
        """How many processes train together."""
        ...

    @property
    def device(self) -> torch.device:
        """The device this process trains on (``cuda:LOCAL_RANK`` or ``cpu``)."""
        ...

    @property
    def is_distributed(self) -> bool:
        """Whether there is more than one process."""
        ...

    @property
    def is_main_process(self) -> bool:
        """Whether this is global rank 0: the one that writes checkpoints, logs and bars."""
        ...

    @property
    def is_local_main_process(self) -> bool:
        """Whether this is local rank 0 on its node."""
        ...


@runtime_checkable
class Collectives(Protocol):
    """The collectives the trainer needs, called by every process of the group alike.

    In a group of one each returns its input (or its input's only element), so the trainer has
    one code path whatever the number of processes.
    """

    def barrier(self) -> None:
        """Wait until every process reaches this point."""
        ...

    def all_reduce_mean(self, metrics: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
        """Average each metric over all processes."""
        ...

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Add ``values`` up element-wise over all processes (a new tensor, same device)."""
        ...

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        """Send a picklable object from rank ``src`` to every process."""
        ...

    def all_gather_object(self, obj: T) -> builtins.list[T]:
        """Gather a picklable object from every process, in rank order, on every process."""
        ...

    def agree(self, flag: bool, mode: Literal["any", "all"] = "any") -> bool:
        """Whether ``flag`` holds on any (or all) processes, the same answer everywhere."""
        ...


@runtime_checkable
class DataParallel(Protocol):
    """How a network is spread over the processes for training, and seen through again."""

    def wrap(self, module: nn.Module) -> nn.Module:
        """Prepare a network for training here (DDP when distributed, as-is otherwise)."""
        ...

    def unwrap(self, module: nn.Module) -> nn.Module:
        """The user's network inside whatever :meth:`wrap` put around it."""
        ...

    def no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[None]:
        """A context in which backward does not synchronise gradients (accumulation)."""
        ...


@runtime_checkable
class DistributedContext(ProcessInfo, Collectives, DataParallel, Protocol):
    """The process group a training process belongs to: the union of the three parts above.

    :class:`ProcessInfo` (who am I), :class:`Collectives` (talk to the others) and
    :class:`DataParallel` (wrap networks), plus :meth:`close`. A single process is a group of
    one: every method still works, so the trainer has one code path. A piece of code that needs
    only one part is typed against that part, and a test's stand-in implements only it. The
    engine underneath is ``torch.distributed``.
    """

    def close(self) -> None:
        """Leave the process group (idempotent)."""
        ...


@runtime_checkable
class SizedIterable(Protocol[T_co]):
    """An iterable that knows its length: what a training loader must be.

    ``len()`` is the number of batches *left* in the epoch, so the trainer can lay out
    gradient-accumulation windows and progress bars before the first batch.
    """

    def __len__(self) -> int:
        """How many items are left to iterate."""
        ...

    def __iter__(self) -> Iterator[T_co]:
        """The items."""
        ...


@runtime_checkable
class DataSource(Protocol):
    """Where the trainer gets its batches: a :class:`helios.data.DataModule` or the user's own.

    The training loader must resume exactly: its position within the epoch is part of
    :meth:`state_dict`, and after :meth:`load_state_dict` the next
    :meth:`train_dataloader` iteration continues with the first batch not yet trained on.
    """

    def prepare_data(self) -> None:
        """Download or build data once, before any training process exists."""
        ...

    def setup(self) -> None:
        """Create the datasets (called in every process)."""
        ...

    def configure(self, *, rank: int, world_size: int, seed: int) -> None:
        """Say which rank of how many this process is, and the run's seed, before loaders."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """Move the training order to ``epoch``; a no-op for the epoch already current."""
        ...

    def train_dataloader(self) -> SizedIterable[Any] | None:
        """The training batches of the current epoch, from the saved position on.

        It must have a ``len()`` (:class:`SizedIterable`): the number of batches left in the
        epoch, so the trainer can lay out gradient-accumulation windows and progress bars. The
        trainer refuses one without (a :class:`~helios.core.ConfigurationError`).
        """
        ...

    def valid_dataloader(self) -> Iterable[Any] | None:
        """The validation batches, or ``None`` without validation data."""
        ...

    def test_dataloader(self) -> Iterable[Any] | None:
        """The test batches, or ``None`` without test data."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The epoch, position and phase of the training data."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        ...
