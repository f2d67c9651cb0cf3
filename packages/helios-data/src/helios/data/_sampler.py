"""``ResumableSampler``: an epoch's order as a pure function of (seed, epoch), resumable in O(1).

Every epoch has one *global order*: position ``p`` (from 0) holds a dataset index, a seeded
bijection of ``range(len(dataset))`` for random order or ``p`` itself for sequential order.
Nothing else decides the order: no global RNG, no list of indices.

Ranks take the global order interleaved, as :class:`torch.utils.data.DistributedSampler` does:
rank ``r`` of ``W`` reads positions ``r, r + W, r + 2W, ...``. So after every rank has taken ``j``
samples the loop has consumed exactly the positions ``[0, j * W)``: a prefix. The sampler's state
is that prefix's length, counted *globally* (``consumed``), plus the epoch. Resuming slices the
order at ``consumed`` without touching a skipped sample, and because the count is global the same
state resumes at another world size: the remaining positions are dealt out again over the new
ranks, each still seen exactly once.

Uneven lengths follow DistributedSampler: with ``drop_last`` the tail that does not fill every
rank is dropped, otherwise it is padded with positions from the start of the epoch (position
``p >= n`` reads index ``order[p % n]``), or, with ``padding=False`` (evaluation), ranks simply
get one sample fewer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Iterator, Sized
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from torch.utils.data import Sampler

from helios.core import ConfigurationError, ResumeError
from helios.data._permutation import FeistelPermutation, derive_key, mix64
from helios.data._position import PositionClaim, SamplePosition

__all__ = ["SAMPLE_STREAM", "ResumableSampler"]

# Indices are computed at most this many at a time: large enough for NumPy to run at full speed,
# small enough to stay in cache and to bound memory whatever the dataset size. The first chunk of
# an iteration is small, so the first batch does not wait for 65,536 indices.
CHUNK: Final = 1 << 16
_FIRST_CHUNK: Final = 1 << 10
_STATE_VERSION: Final = 1
_MAX_SEED: Final = 2**64 - 1
_ORDER_STREAM: Final = 1
SAMPLE_STREAM: Final = 2
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)


@dataclasses.dataclass
class _LiveChunk:
    """Where a direct iteration is: the list iterator of the chunk being handed out."""

    start: int
    first: int
    size: int
    items: Iterator[int]

    def taken(self) -> int:
        """This rank's samples handed out so far, counted from ``start``."""
        left: int = self.items.__length_hint__()  # type: ignore[attr-defined]
        return self.first + self.size - left


def chunks(count: int) -> Iterator[tuple[int, int]]:
    """Split ``range(count)`` into ``(first, stop)`` pieces growing from 1,024 to ``CHUNK``."""
    first, size = 0, _FIRST_CHUNK
    while first < count:
        stop = min(first + size, count)
        yield first, stop
        first, size = stop, min(size * 4, CHUNK)


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigurationError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        expected = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigurationError(f"{name} must be {expected}, got {value}")
    return value


class ResumableSampler(Sampler[int]):
    """Random or sequential order over a map-style dataset, exactly resumable, elastic.

    The order of epoch ``e`` is a pure function of ``(seed, e)``; the state is the epoch and the
    number of samples consumed (globally, over all ranks). Iterating the sampler directly counts
    every index it hands out as consumed, which is right for a hand-written loop and for a
    ``DataLoader`` with ``num_workers=0``. With worker processes, which fetch ahead, use
    :class:`~helios.data.ResumableDataLoader`: it counts the batches the loop received instead.

    Example:
        >>> sampler = ResumableSampler(10, shuffle=True, seed=3)
        >>> first = [i for _, i in zip(range(4), sampler)]
        >>> state = sampler.state_dict()                  # 4 samples consumed
        >>> resumed = ResumableSampler(10, shuffle=True, seed=3)
        >>> resumed.load_state_dict(state)
        >>> sorted(first + list(resumed)) == list(range(10))
        True

    Call :meth:`set_epoch` at the start of every epoch, as with ``DistributedSampler``: setting
    the epoch already current keeps the position (that is how a resumed run continues
    mid-epoch), any other epoch starts at position 0.

    The position lives in one :class:`~helios.data.SamplePosition` (:attr:`position`), the
    sampler's own unless :meth:`use_position` gives it one to share: a
    :class:`~helios.data.DataModule` owns the training position and lends it to each training
    sampler it builds, so the position is never copied.

    Args:
        data_source: the dataset (anything with ``len``) or its length.
        shuffle: random order (a seeded Feistel bijection, O(1) memory) or ``0, 1, 2, ...``.
        seed: the order's seed, in ``[0, 2**64 - 1]``; also seeds each batch's randomness in
            :class:`~helios.data.ResumableDataLoader`.
        num_replicas: how many ranks share the data.
        rank: this process's rank, in ``[0, num_replicas)``.
        drop_last: drop the tail that would not give every rank a sample (as DistributedSampler).
        padding: without ``drop_last``, pad the tail with samples from the start of the epoch so
            every rank gets as many (``True``, DistributedSampler's behaviour, for training), or
            let ranks get one sample fewer so every sample counts once (``False``, evaluation).

    Raises:
        ConfigurationError: an argument is out of range.
    """

    def __init__(
        self,
        data_source: Sized | int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        padding: bool = True,
    ) -> None:
        """Create the sampler at epoch 0, position 0."""
        size = data_source if isinstance(data_source, int) else len(data_source)
        self._size = _check_int("dataset size", size, 0)
        self._seed = _check_int("seed", seed, 0, _MAX_SEED)
        self._num_replicas = _check_int("num_replicas", num_replicas, 1)
        self._rank = _check_int("rank", rank, 0, self._num_replicas - 1)
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last), ("padding", padding)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be a bool, got {flag!r}")
        self._shuffle = shuffle
        self._drop_last = drop_last
        self._padding = padding
        self._position = SamplePosition()
        self._order: tuple[int, FeistelPermutation] | None = None

    # --- configuration ------------------------------------------------------------------------

    @property
    def dataset_size(self) -> int:
        """The number of samples in the dataset."""
        return self._size

    @property
    def shuffle(self) -> bool:
        """Whether the order is random."""
        return self._shuffle

    @property
    def seed(self) -> int:
        """The seed of the order and of the batches' randomness."""
        return self._seed

    @property
    def num_replicas(self) -> int:
        """How many ranks share the data."""
        return self._num_replicas

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self._rank

    @property
    def drop_last(self) -> bool:
        """Whether the tail that does not fill every rank is dropped."""
        return self._drop_last

    @property
    def padding(self) -> bool:
        """Whether (without ``drop_last``) the tail is padded so every rank gets as many."""
        return self._padding

    # --- position -----------------------------------------------------------------------------

    @property
    def position(self) -> SamplePosition:
        """The object holding the epoch and the samples consumed (shared, never copied)."""
        return self._position

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._position.epoch

    @property
    def consumed(self) -> int:
        """Samples of this epoch consumed so far over all ranks; ``dataset_size`` once done."""
        return self._position.consumed

    def use_position(self, position: SamplePosition) -> None:
        """Read and write the position in ``position`` from now on, starting where it stands.

        Iterations started before no longer move any position.

        Raises:
            ConfigurationError: ``position`` is past the end of this sampler's epoch.
        """
        epoch, consumed = position.epoch, position.consumed
        self._position = position
        self.set_position(epoch, consumed)

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` at position 0; a no-op if ``epoch`` is the current epoch.

        Raises:
            ConfigurationError: ``epoch`` is not a non-negative int.
        """
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self.set_position(epoch, 0)

    def set_position(self, epoch: int, consumed: int) -> None:
        """Move to ``consumed`` samples (counted over all ranks) into ``epoch``.

        Raises:
            ConfigurationError: ``epoch`` is negative or ``consumed`` is not in
                ``[0, dataset_size]``.
        """
        epoch = _check_int("epoch", epoch, 0)
        consumed = self._normalise(_check_int("consumed", consumed, 0, self._size))
        self._position.move_to(epoch, consumed)

    def rank_count(self, start: int | None = None) -> int:
        """How many samples this rank gets from global position ``start`` (default: now)."""
        begin = self.consumed if start is None else start
        remaining = self._size - begin
        if remaining <= 0:
            return 0
        replicas = self._num_replicas
        if self._drop_last:
            return remaining // replicas
        if self._padding:
            return math.ceil(remaining / replicas)
        return max(0, math.ceil((remaining - self._rank) / replicas))

    def __len__(self) -> int:
        """How many samples this rank has left in the current epoch."""
        return self.rank_count()

    # --- the order ----------------------------------------------------------------------------

    def epoch_indices(
        self, epoch: int, positions: npt.NDArray[np.integer[Any]]
    ) -> npt.NDArray[np.int64]:
        """The dataset indices at global ``positions`` of ``epoch``'s order.

        Positions at or past ``dataset_size`` (padding) wrap to the start of the order.

        Args:
            epoch: the epoch whose order is read.
            positions: non-negative global positions.

        Returns:
            The indices, as ``int64``, same shape.
        """
        wrapped = positions.astype(np.int64)
        if self._size and wrapped.size and int(wrapped.max()) >= self._size:
            wrapped = wrapped % self._size
        if not self._shuffle:
            return wrapped
        if self._order is None or self._order[0] != epoch:
            key = derive_key(self._seed, epoch, _ORDER_STREAM)
            self._order = (epoch, FeistelPermutation(self._size, key))
        return self._order[1](wrapped)

    def sample_seeds(
        self, epoch: int, positions: npt.NDArray[np.integer[Any]]
    ) -> npt.NDArray[np.uint64]:
        """The 64-bit seed of the sample at each global position of ``epoch``.

        A pure function of ``(seed, epoch, position)``: the sample at a given position gets the
        same seed whatever the number of workers or ranks and wherever the run was resumed.
        """
        base = np.uint64(derive_key(self._seed, epoch, SAMPLE_STREAM))
        return mix64(positions.astype(np.uint64) * _GOLDEN + base)

    def rank_positions(self, start: int, first: int, stop: int) -> npt.NDArray[np.int64]:
        """Global positions of this rank's samples ``first .. stop - 1`` counted from ``start``."""
        steps = np.arange(first, stop, dtype=np.int64)
        return steps * self._num_replicas + (start + self._rank)

    def __iter__(self) -> Iterator[int]:
        """This rank's remaining indices of the current epoch, each counted as consumed."""
        claim = self.claim()
        count = self.rank_count(claim.start)
        if count == 0:
            self.warn_if_done(claim.start)
        return self._counted(claim, count)

    def _counted(self, claim: PositionClaim, count: int) -> Iterator[int]:
        position, start, epoch = self._position, claim.start, self.epoch
        for first, stop in chunks(count):
            if not position.holds(claim):
                return
            chunk = self.epoch_indices(epoch, self.rank_positions(start, first, stop))
            items = iter(chunk.tolist())
            # A list iterator knows how far it got (its length hint): the position is read from
            # it on demand, at no cost per index.
            live = _LiveChunk(start, first, stop - first, items)
            position.follow(claim, functools.partial(self._live_consumed, live))
            yield from items
        self.advance(claim, start + count * self._num_replicas)

    def _live_consumed(self, live: _LiveChunk) -> int:
        return self._normalise(live.start + live.taken() * self._num_replicas)

    # --- for loaders that count what the loop received (ResumableDataLoader) ------------------

    def claim(self) -> PositionClaim:
        """Start an iteration at the current position; iterations started before stop counting.

        Returns:
            The claim to pass to :meth:`advance`; ``claim.start`` is the position it starts at.
        """
        return self._position.claim()

    def advance(self, claim: PositionClaim, consumed: int) -> None:
        """Record ``consumed`` (global samples) for ``claim``'s iteration, if it still holds."""
        self._position.advance(claim, self._normalise(consumed))

    def _normalise(self, consumed: int) -> int:
        # An epoch with nothing left for any rank is reported as fully consumed: the same state
        # whether the last samples were delivered or dropped.
        consumed = min(consumed, self._size)
        remaining = self._size - consumed
        if remaining <= 0 or (self._drop_last and remaining < self._num_replicas):
            return self._size
        return consumed

    def warn_if_done(self, start: int) -> None:
        """Warn (from the caller of the iteration) that an iteration from ``start`` is empty."""
        if self._size and start >= self._size:
            epoch = self.epoch
            warnings.warn(
                f"epoch {epoch} is fully consumed, so this iteration is empty; call "
                f"set_epoch({epoch + 1}) to start the next epoch",
                RuntimeWarning,
                stacklevel=3,
            )

    # --- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The epoch and the global number of samples consumed, plus what the order depends on.

        Returns:
            A dict of ints and bools, safe for ``torch.load(weights_only=True)``.
        """
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "dataset_size": self._size,
            "shuffle": self._shuffle,
            "seed": self._seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output, at any number of ranks.

        Raises:
            ResumeError: the state is malformed, or was saved for another dataset size, order
                (``shuffle``) or seed, so the remaining samples would not be the unseen ones.
        """
        expected = {"version", "epoch", "consumed", "dataset_size", "shuffle", "seed"}
        missing = expected - state_dict.keys()
        if missing:
            raise ResumeError(
                f"sampler state is missing {sorted(missing)}; got {sorted(state_dict)}"
            )
        if state_dict["version"] != _STATE_VERSION:
            raise ResumeError(
                f"sampler state has version {state_dict['version']!r}; expected {_STATE_VERSION}"
            )
        for name, mine in (
            ("dataset_size", self._size),
            ("shuffle", self._shuffle),
            ("seed", self._seed),
        ):
            if state_dict[name] != mine:
                raise ResumeError(
                    f"sampler state was saved with {name}={state_dict[name]!r} but this sampler "
                    f"has {name}={mine!r}; the order would differ, so resuming is not exact"
                )
        try:
            self.set_position(state_dict["epoch"], state_dict["consumed"])
        except ConfigurationError as error:
            raise ResumeError(f"sampler state is malformed: {error}") from error

    def __repr__(self) -> str:
        """Show the configuration and the position."""
        order = "random" if self._shuffle else "sequential"
        return (
            f"ResumableSampler({self._size}, {order}, seed={self._seed}, rank {self._rank} of "
            f"{self._num_replicas}, epoch {self.epoch}, consumed {self.consumed})"
        )
