"""``ResumableDataLoader``: a ``DataLoader`` that knows how far the training loop got.

Worker processes fetch ahead (``prefetch_factor`` batches each), so what the sampler has handed
out is more than what the loop has trained on; saving the sampler's view would skip the prefetched
batches on resume. This loader counts the batches *delivered to the loop* instead and writes the
position back into its :class:`~helios.data.ResumableSampler` as each batch is handed over, in
global samples (``batch_size * num_replicas`` per batch, exactly what the short last batch holds).

Underneath is a plain ``torch.utils.data.DataLoader`` over a :class:`~helios.data.SeededDataset`:
its batch sampler yields ``(batch seed, indices)`` keys, so randomness in ``__getitem__`` and
``collate_fn`` is seeded per batch from ``(seed, epoch, position)``. It gets a private
``torch.Generator``, so creating an iterator never draws from the global torch RNG (``DataLoader``
otherwise draws its workers' base seed from it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any, Final, Generic, TypeVar, cast

import torch
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    Sampler,
    StackDataset,
    Subset,
    TensorDataset,
    default_collate,
    default_convert,
)

from helios.core import ConfigurationError
from helios.data._params import DataLoaderParams
from helios.data._permutation import GOLDEN, MASK64, derive_key, mix_int
from helios.data._position import PositionClaim
from helios.data._sampler import SAMPLE_STREAM, ResumableSampler, chunks
from helios.data._seeding import BatchKey, SeededDataset, first_of
from helios.data._worker_signals import StopSafeDataLoader

__all__ = ["ResumableDataLoader", "build_torch_loader"]

T = TypeVar("T")


class BatchKeys(Sampler[BatchKey]):
    """The batches of a :class:`ResumableSampler`'s order, as ``(batch seed, indices)`` keys.

    The ``batch_sampler`` of the ``DataLoader`` underneath. It never moves the sampler: it reads
    from ``start`` in ``epoch``, both set by its owner before each iteration, and leaves counting
    to :class:`ResumableDataLoader`. A batch's seed is the sampler's seed of the global position
    of its first sample (:meth:`ResumableSampler.sample_seeds`): a pure function of
    ``(seed, epoch, position)``, whatever the number of workers and wherever the run resumed.
    """

    def __init__(self, sampler: ResumableSampler, batch_size: int, *, drop_last: bool) -> None:
        """Read ``sampler``'s order from its current position, ``batch_size`` at a time."""
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.start = sampler.consumed
        self.epoch = sampler.epoch

    def batches(self, samples: int) -> int:
        """How many batches ``samples`` samples of this rank make."""
        if self.drop_last:
            return samples // self.batch_size
        return math.ceil(samples / self.batch_size)

    def __len__(self) -> int:
        """Batches this rank reads from ``start``."""
        return self.batches(self.sampler.rank_count(self.start))

    def __iter__(self) -> Iterator[BatchKey]:
        """The keys of this rank's batches from ``start`` on, indices computed a chunk at a time."""
        sampler, start, epoch, size = self.sampler, self.start, self.epoch, self.batch_size
        count = sampler.rank_count(start)
        base = derive_key(sampler.seed, epoch, SAMPLE_STREAM)
        stride = sampler.num_replicas * size
        first_position = start + sampler.rank
        indices = _indices(sampler, start, epoch, count)
        for batch in range(self.batches(count)):
            position = first_position + batch * stride
            seed = mix_int((position * GOLDEN + base) & MASK64)
            yield seed, list(itertools.islice(indices, size))


def _indices(sampler: ResumableSampler, start: int, epoch: int, count: int) -> Iterator[int]:
    for first, stop in chunks(count):
        yield from sampler.epoch_indices(epoch, sampler.rank_positions(start, first, stop)).tolist()


# torch's datasets that draw no random numbers, and the wrappers that draw none of their own.
_PURE_DATASETS: Final = (TensorDataset,)
_PURE_WRAPPERS: Final = (Subset, ConcatDataset, StackDataset)
_PURE_COLLATES: Final = (default_collate, default_convert)


def _draws_no_randomness(dataset: object) -> bool:
    kind = type(dataset)
    if kind in _PURE_DATASETS:
        return True
    if kind is Subset:
        return _draws_no_randomness(cast("Subset[Any]", dataset).dataset)
    if kind is ConcatDataset:
        return all(map(_draws_no_randomness, cast("ConcatDataset[Any]", dataset).datasets))
    if kind is StackDataset:
        inner = cast("StackDataset[Any]", dataset).datasets
        parts = inner.values() if isinstance(inner, dict) else inner
        return all(map(_draws_no_randomness, parts))
    return False


def _needs_seeding(dataset: Dataset[Any], params: DataLoaderParams) -> bool:
    """Whether batches must be seeded: the user's say, else unless provably no draw is made."""
    if params.seed_batches is not None:
        return params.seed_batches
    pure_collate = any(params.resolved_collate_fn() is fn for fn in _PURE_COLLATES)
    return not (pure_collate and _draws_no_randomness(dataset))


def build_torch_loader(
    dataset: Dataset[Any], keys: BatchKeys, params: DataLoaderParams
) -> DataLoader[Any]:
    """The ``torch.utils.data.DataLoader`` that reads ``dataset`` in ``keys``' batches."""
    if isinstance(dataset, IterableDataset):
        raise ConfigurationError(
            f"dataset must be a map-style Dataset (with __getitem__ and __len__), got the "
            f"IterableDataset {type(dataset).__name__}: its order cannot be resumed exactly"
        )
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigurationError(
            f"dataset must have a len(), {type(dataset).__name__} has none"
        ) from None
    if size != keys.sampler.dataset_size:
        raise ConfigurationError(
            f"the sampler was made for {keys.sampler.dataset_size} samples but the dataset "
            f"holds {size}"
        )
    generator = torch.Generator()
    generator.manual_seed(keys.sampler.seed)
    return StopSafeDataLoader(  # workers ignore stop signals: see _worker_signals
        SeededDataset(
            dataset, params.resolved_collate_fn(), seeded=_needs_seeding(dataset, params)
        ),
        batch_sampler=keys,
        num_workers=params.num_workers,
        collate_fn=first_of,
        pin_memory=params.pin_memory,
        timeout=params.timeout,
        worker_init_fn=params.worker_init_fn,
        multiprocessing_context=params.multiprocessing_context,
        generator=generator,
        prefetch_factor=params.prefetch_factor,
        persistent_workers=params.persistent_workers,
        in_order=True,
    )


class ResumableDataLoader(Generic[T]):
    """Batches of a map-style dataset in a :class:`ResumableSampler`'s order, exactly resumable.

    Iterating it yields the batches of the current epoch from the sampler's position; each batch
    handed to the loop advances the position, so :meth:`state_dict` (the sampler's) is right at
    any moment, whatever the workers prefetched. ``len()`` is the number of batches *left* in the
    epoch on this rank. Iterating again after a ``break`` continues with the first batch the loop
    did not receive. Batches are collated with torch's ``default_collate`` unless told otherwise.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.arange(10.0))
        >>> loader = ResumableDataLoader(data, ResumableSampler(data, seed=1), batch_size=4)
        >>> for epoch in range(2):
        ...     loader.set_epoch(epoch)
        ...     for (x,) in loader:
        ...         pass  # train; torch.save(loader.state_dict(), ...) at any batch
        >>> len(loader), loader.state_dict()["epoch"]
        (0, 1)

    Args:
        dataset: a map-style dataset whose length is the sampler's ``dataset_size``.
        sampler: the order and the position; shared, so its state is the loader's.
        batch_size: samples per batch on this rank.
        drop_last: drop the last incomplete batch of the epoch.
        num_workers: worker processes; 0 loads in the main process.
        collate_fn: a callable or a name in :data:`~helios.data.COLLATE_REGISTRY`; ``None``
            is ``default_collate``.
        pin_memory: copy batches to page-locked memory.
        prefetch_factor: batches each worker loads ahead (needs workers).
        persistent_workers: keep workers alive between epochs (needs workers).
        timeout: seconds to wait for a batch from the workers.
        worker_init_fn: called in each worker with its id.
        multiprocessing_context: ``"fork"``, ``"spawn"``, ``"forkserver"`` or ``None``.
        seed_batches: seed the RNGs per batch (see :class:`DataLoaderParams`); ``None`` seeds
            unless the dataset and collate function provably draw no random numbers.

    Raises:
        ConfigurationError: a setting is invalid (see :class:`DataLoaderParams`), the dataset is
            iterable-style or its length differs from the sampler's.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        sampler: ResumableSampler,
        *,
        batch_size: int = 1,
        drop_last: bool = False,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], T] | str | None = None,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        timeout: float = 0.0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: str | None = None,
        seed_batches: bool | None = None,
    ) -> None:
        """Check the settings and build the ``DataLoader`` underneath (no worker starts yet)."""
        if not isinstance(sampler, ResumableSampler):
            raise ConfigurationError(
                f"sampler must be a ResumableSampler, got {type(sampler).__name__}"
            )
        params = DataLoaderParams(
            batch_size=batch_size,
            drop_last=drop_last,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            timeout=timeout,
            worker_init_fn=worker_init_fn,
            multiprocessing_context=multiprocessing_context,
            seed_batches=seed_batches,
        )
        self._sampler = sampler
        self._params = params
        self._keys = BatchKeys(sampler, params.batch_size, drop_last=params.drop_last)
        self._loader = build_torch_loader(dataset, self._keys, params)
        self.dataset = dataset

    @classmethod
    def from_params(
        cls, dataset: Dataset[Any], sampler: ResumableSampler, params: DataLoaderParams
    ) -> ResumableDataLoader[Any]:
        """Build a loader from :class:`DataLoaderParams`.

        Its ``shuffle``, ``seed`` and ``sampler`` fields describe the sampler and are not used.
        """
        return ResumableDataLoader(
            dataset,
            sampler,
            batch_size=params.batch_size,
            drop_last=params.drop_last,
            num_workers=params.num_workers,
            collate_fn=params.collate_fn,
            pin_memory=params.pin_memory,
            prefetch_factor=params.prefetch_factor,
            persistent_workers=params.persistent_workers,
            timeout=params.timeout,
            worker_init_fn=params.worker_init_fn,
            multiprocessing_context=params.multiprocessing_context,
            seed_batches=params.seed_batches,
        )

    @property
    def sampler(self) -> ResumableSampler:
        """The sampler holding the order and the position."""
        return self._sampler

    @property
    def batch_size(self) -> int:
        """Samples per batch on this rank."""
        return self._params.batch_size

    @property
    def num_workers(self) -> int:
        """Worker processes (0: the main process loads)."""
        return self._params.num_workers

    def __len__(self) -> int:
        """Batches left in the current epoch on this rank."""
        return self._keys.batches(self._sampler.rank_count())

    def __iter__(self) -> Iterator[T]:
        """The remaining batches of the current epoch; each delivered batch is counted."""
        sampler = self._sampler
        claim = sampler.claim()
        count = sampler.rank_count(claim.start)
        batches = self._keys.batches(count)
        if batches == 0:
            sampler.advance(claim, sampler.dataset_size)
            sampler.warn_if_done(claim.start)
            return iter(())
        self._keys.start = claim.start
        self._keys.epoch = sampler.epoch
        return self._deliver(iter(self._loader), claim, count, batches)

    def _deliver(
        self, batches_in: Iterator[T], claim: PositionClaim, count: int, batches: int
    ) -> Iterator[T]:
        sampler, start = self._sampler, claim.start
        step = self._params.batch_size
        replicas = sampler.num_replicas
        for delivered, batch in enumerate(batches_in, start=1):
            if delivered >= batches:
                consumed = sampler.dataset_size  # the epoch is done (a dropped tail included)
            else:
                consumed = start + min(delivered * step, count) * replicas
            sampler.advance(claim, consumed)
            yield batch

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` at position 0; a no-op for the current epoch (see the sampler)."""
        self._sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state: epoch and global samples consumed."""
        return self._sampler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`, at any number of ranks."""
        self._sampler.load_state_dict(state_dict)

    def __repr__(self) -> str:
        """Show the batch size, workers and the sampler."""
        return (
            f"ResumableDataLoader(batch_size={self.batch_size}, num_workers={self.num_workers}, "
            f"{self._sampler!r})"
        )
