"""``DataLoaderParams``: how one dataset is loaded, checked when it is written down.

A mistake in loader settings (a batch size of 0, negative workers, a prefetch factor without
workers) otherwise surfaces minutes later, deep inside ``DataLoader``, or not at all. Here it is a
:class:`~helios.core.ConfigurationError` at construction, naming the field, the value and what
was expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final

from helios.core import ConfigurationError
from helios.data._registries import COLLATE_REGISTRY, SAMPLER_REGISTRY

__all__ = ["DataLoaderParams"]

_CONTEXTS: Final = ("fork", "spawn", "forkserver")
_MAX_SEED: Final = 2**64 - 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class DataLoaderParams:
    """Settings of one loader: batching, order, workers. Validated on construction.

    Attributes:
        batch_size: samples per batch (per rank), at least 1.
        shuffle: random order (a new one every epoch) or sequential.
        num_workers: worker processes; 0 loads in the main process.
        pin_memory: copy batches to page-locked memory (faster host-to-GPU transfer).
        drop_last: drop the last incomplete batch, and (with several ranks) the samples that
            would not give every rank as many, instead of padding.
        collate_fn: how a list of samples becomes a batch: a callable or a name in
            :data:`~helios.data.COLLATE_REGISTRY`; ``None`` is torch's ``default_collate``.
        prefetch_factor: batches each worker loads ahead; needs ``num_workers > 0``.
        persistent_workers: keep worker processes alive between epochs; needs workers.
        seed: the seed of the order and of each batch's randomness; ``None`` takes the run's
            seed (``DataModule.configure``).
        timeout: seconds to wait for a batch from the workers; 0 waits forever.
        worker_init_fn: called in each worker process with its id, as in ``DataLoader``.
        multiprocessing_context: ``"fork"``, ``"spawn"``, ``"forkserver"`` or ``None`` (the
            platform's default).
        sampler: the name of the sampler factory in :data:`~helios.data.SAMPLER_REGISTRY`.
        seed_batches: seed the RNGs before each batch so randomness in ``__getitem__`` and
            ``collate_fn`` is exact (see :class:`~helios.data.SeededDataset`). ``None`` (the
            default): yes, unless the dataset is one of torch's that draw no random numbers
            (``TensorDataset``, and ``Subset``, ``ConcatDataset`` or ``StackDataset`` of those)
            and the collate function is torch's own. ``False`` says that the dataset and
            ``collate_fn`` draw no random numbers, which saves ~30 µs a batch in the main
            process; if they do draw, their numbers then change with ``num_workers`` and on
            resume. ``True`` always seeds.

    Raises:
        ConfigurationError: a field has a value the loader cannot work with (a ``RegistryError``,
            which is one, for an unknown collate function or sampler name).
    """

    batch_size: int = 1
    shuffle: bool = False
    num_workers: int = 0
    pin_memory: bool = False
    drop_last: bool = False
    collate_fn: Callable[[list[Any]], Any] | str | None = None
    prefetch_factor: int | None = None
    persistent_workers: bool = False
    seed: int | None = None
    timeout: float = 0.0
    worker_init_fn: Callable[[int], None] | None = None
    multiprocessing_context: str | None = None
    sampler: str = "ResumableSampler"
    seed_batches: bool | None = None

    def __post_init__(self) -> None:
        """Check every field; raise :class:`ConfigurationError` on the first bad one."""
        self._check_values()
        self._check_worker_settings()
        self._check_callables()

    def _check_values(self) -> None:
        """Each field on its own: types and ranges."""
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigurationError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if not _is_int(self.num_workers) or self.num_workers < 0:
            raise ConfigurationError(f"num_workers must be an int >= 0, got {self.num_workers!r}")
        if self.seed_batches is not None and not isinstance(self.seed_batches, bool):
            raise ConfigurationError(
                f"seed_batches must be True, False or None, got {self.seed_batches!r}"
            )
        for name in ("shuffle", "pin_memory", "drop_last", "persistent_workers"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigurationError(f"{name} must be a bool, got {value!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= _MAX_SEED):
            raise ConfigurationError(
                f"seed must be None or an int in [0, 2**64 - 1], got {self.seed!r}"
            )
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or self.timeout < 0
        ):
            raise ConfigurationError(f"timeout must be a number >= 0, got {self.timeout!r}")
        if self.multiprocessing_context not in (None, *_CONTEXTS):
            raise ConfigurationError(
                f"multiprocessing_context must be None or one of {_CONTEXTS}, "
                f"got {self.multiprocessing_context!r}"
            )

    def _check_worker_settings(self) -> None:
        """Settings that only mean something with worker processes."""
        if self.prefetch_factor is not None:
            if not _is_int(self.prefetch_factor) or self.prefetch_factor < 1:
                raise ConfigurationError(
                    f"prefetch_factor must be an int >= 1 or None, got {self.prefetch_factor!r}"
                )
            if self.num_workers == 0:
                raise ConfigurationError(
                    f"prefetch_factor={self.prefetch_factor} needs worker processes, but "
                    "num_workers=0; set num_workers > 0 or leave prefetch_factor=None"
                )
        if self.persistent_workers and self.num_workers == 0:
            raise ConfigurationError(
                "persistent_workers=True needs worker processes, but num_workers=0; "
                "set num_workers > 0 or persistent_workers=False"
            )
        if self.timeout > 0 and self.num_workers == 0:
            raise ConfigurationError(
                f"timeout={self.timeout} applies to worker processes, but num_workers=0"
            )

    def _check_callables(self) -> None:
        """The worker initialiser, the collate function and the sampler name."""
        if self.worker_init_fn is not None and not callable(self.worker_init_fn):
            raise ConfigurationError(
                f"worker_init_fn must be callable or None, got {self.worker_init_fn!r}"
            )
        if isinstance(self.collate_fn, str):
            COLLATE_REGISTRY.get(self.collate_fn)
        elif self.collate_fn is not None and not callable(self.collate_fn):
            raise ConfigurationError(
                f"collate_fn must be a callable, a name in COLLATE_REGISTRY or None, "
                f"got {self.collate_fn!r}"
            )
        if not isinstance(self.sampler, str):
            raise ConfigurationError(
                f"sampler must be a name in SAMPLER_REGISTRY, got {self.sampler!r}"
            )
        SAMPLER_REGISTRY.get(self.sampler)

    def resolved_collate_fn(self) -> Callable[[list[Any]], Any]:
        """The collate function: a registry name looked up, ``None`` as ``default_collate``."""
        if self.collate_fn is None:
            return COLLATE_REGISTRY.get("default_collate")
        if isinstance(self.collate_fn, str):
            return COLLATE_REGISTRY.get(self.collate_fn)
        return self.collate_fn
