"""Seeded batches: random augmentation that does not depend on who built the batch, nor when.

With plain PyTorch, random augmentation in ``__getitem__`` (or in ``collate_fn``) draws from the
RNG of whichever process builds the batch, so its values change with ``num_workers``, with the
worker a batch lands on and with where a run was resumed. Here every batch is fetched with a
*key*, ``(seed, indices)``, whose seed is a pure function of ``(seed, epoch, global position of
the batch's first sample)``. :class:`SeededDataset` seeds Python's ``random``, NumPy's legacy
global RNG, Helios' NumPy generator (:func:`helios.core.numpy_generator`) and torch's CPU
generator from it, then fetches every sample of the batch and collates them, all in one block.
So ``__getitem__``, ``__getitems__`` and ``collate_fn`` draw the same numbers for 0 or 16 workers
and on every resume.

Seeding once per batch rather than once per sample is what makes this cheap (four seedings per
batch, about 9 µs, instead of per sample); the guarantee is the same as long as the batches are
the same, which they are at a given batch size and world size. In the main process
(``num_workers=0``) the global RNG states are saved before and put back after the batch, so the
training loop's own randomness (dropout, ...) is not touched by loading. NumPy's public state
API copies the 2.5 kB legacy state element by element (about 50 µs each way); the MT19937 state
is instead copied through the bit generator's documented ``ctypes.state_address``, after a
self-check at import that the copy is the state (otherwise the public API is used).
"""

from __future__ import annotations

import ctypes
import random
from collections.abc import Callable, Sequence, Sized
from typing import Any, Final, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from helios.core import numpy_generator

__all__ = ["BatchKey", "SeededDataset", "first_of", "seed_batch"]

T_co = TypeVar("T_co", covariant=True)

BatchKey = tuple[int, list[int]]
"""What a batch is fetched with: its 64-bit seed and the dataset indices of its samples."""

_MASK64: Final = (1 << 64) - 1
_MASK128: Final = (1 << 128) - 1


def _mix(value: int) -> int:
    z = value & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def seed_batch(seed: int) -> None:
    """Seed every RNG that data-loading code draws from, for one batch.

    Python's ``random``, NumPy's legacy global RNG (from the seed's upper 32 bits: seeding it
    from more costs 5x as much, and batch seeds are well mixed), Helios' NumPy
    generator (:func:`helios.core.numpy_generator`) and torch's CPU generator. CUDA generators are
    left alone: loading code does not run on the GPU, and reseeding them would touch the training
    loop's streams.

    Args:
        seed: a 64-bit batch seed.
    """
    random.seed(seed)
    np.random.seed(seed >> 32)
    # The CPU generator only: torch.manual_seed would also reseed every CUDA device.
    torch.default_generator.manual_seed(seed)
    # PCG64 takes a 128-bit state and an odd increment: set them from the seed directly (a
    # SeedSequence would cost 10 µs); the mixer makes neighbouring seeds unrelated.
    high, low = _mix(seed ^ 0x5851F42D4C957F2D), _mix(seed + 0x14057B7EF767814F)
    increment = ((_mix(seed ^ 0xDA3E39CB94B95BDB) << 64) | _mix(~seed)) | 1
    numpy_generator().bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": ((high << 64) | low) & _MASK128, "inc": increment & _MASK128},
        "has_uint32": 0,
        "uinteger": 0,
    }


# NumPy's legacy global RNG (np.random.*) is a RandomState over an MT19937, whose C state is
# ``uint32 key[624]; int pos``: 2,500 bytes at the bit generator's ``ctypes.state_address``.
_LEGACY_STATE_BYTES: Final = 624 * 4 + 4


def _legacy_state_address() -> int | None:
    """The address of the legacy MT19937 state, if copying it there provably is the state."""
    try:
        bit_generator = np.random.mtrand._rand._bit_generator
        address = int(bit_generator.ctypes.state_address)
        saved = np.random.get_state()
        np.random.seed(12345)
        np.random.random(7)
        copy = (ctypes.c_char * _LEGACY_STATE_BYTES)()
        ctypes.memmove(copy, address, _LEGACY_STATE_BYTES)
        expected = np.random.get_state(legacy=False)["state"]
        key = np.frombuffer(bytes(copy), dtype=np.uint32, count=624)
        pos = int.from_bytes(bytes(copy)[624 * 4 :], "little", signed=True)
        ok = bool(np.array_equal(key, expected["key"])) and pos == int(expected["pos"])
        np.random.set_state(saved)
    except Exception:  # any surprise in NumPy's internals: use the public API
        return None
    return address if ok else None


_LEGACY_ADDRESS: Final = _legacy_state_address()


class _SavedGlobalRng:
    """The main process's global RNG states, saved around a batch built in the main process."""

    __slots__ = ("legacy", "numpy_generator", "python", "torch")

    def __init__(self) -> None:
        self.python = random.getstate()
        self.torch = torch.get_rng_state()
        self.numpy_generator = numpy_generator().bit_generator.state
        if _LEGACY_ADDRESS is None:
            self.legacy: Any = np.random.get_state()
        else:
            self.legacy = (ctypes.c_char * _LEGACY_STATE_BYTES)()
            ctypes.memmove(self.legacy, _LEGACY_ADDRESS, _LEGACY_STATE_BYTES)

    def restore(self) -> None:
        random.setstate(self.python)
        torch.set_rng_state(self.torch)
        numpy_generator().bit_generator.state = self.numpy_generator
        if _LEGACY_ADDRESS is None:
            np.random.set_state(self.legacy)
        else:
            # Key and position come back; NumPy's cached second Gaussian (legacy ``normal``) was
            # cleared by seeding and stays cleared, the same in every run and on every resume.
            ctypes.memmove(_LEGACY_ADDRESS, self.legacy, _LEGACY_STATE_BYTES)


def first_of(batches: list[Any]) -> Any:
    """The ``collate_fn`` of the ``DataLoader`` underneath: :class:`SeededDataset` collated."""
    return batches[0]


class SeededDataset(Dataset[Any], Generic[T_co]):
    """A map-style dataset read one whole batch at a time, with the batch's RNGs seeded.

    :class:`~helios.data.ResumableDataLoader` builds one around the user's dataset, which stays a
    plain ``Dataset`` with ``__getitem__(index)`` (a ``__getitems__(indices)`` of its own, for
    batched fetching, is used when present). ``__getitems__`` takes a :data:`BatchKey`, seeds the
    RNGs with :func:`seed_batch`, fetches the samples and collates them, and returns the batch in
    a one-element list, as ``DataLoader``'s fetcher expects of ``__getitems__``.

    Args:
        dataset: the map-style dataset to read.
        collate_fn: how the list of samples becomes a batch (default: torch's
            ``default_collate``).
        seeded: seed the RNGs for each batch; ``False`` only for a dataset and ``collate_fn``
            that draw no random numbers (nothing is then seeded, saved or restored).
    """

    def __init__(
        self,
        dataset: Dataset[T_co],
        collate_fn: Callable[[list[Any]], Any] | None = None,
        *,
        seeded: bool = True,
    ) -> None:
        """Wrap ``dataset``, collating with ``collate_fn``."""
        from torch.utils.data import default_collate

        self.dataset = dataset
        self.seeded = seeded
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        fetch_many = getattr(dataset, "__getitems__", None)
        self._fetch_many: Callable[[list[int]], Sequence[Any]] | None = (
            fetch_many if callable(fetch_many) else None
        )

    def __getitem__(self, key: Any) -> Any:
        """Build the batch of ``key``, a :data:`BatchKey` (the same as ``__getitems__``)."""
        return self.__getitems__(key)[0]

    def __getitems__(self, key: BatchKey) -> list[Any]:
        """Seed the RNGs from the key, fetch every sample and collate them: ``[batch]``."""
        seed, indices = key
        if not self.seeded:
            return [self._build(indices)]
        # A worker's own RNG state matters to no one; the main process's must be kept.
        saved = None if get_worker_info() is not None else _SavedGlobalRng()
        try:
            seed_batch(seed)
            return [self._build(indices)]
        finally:
            if saved is not None:
                saved.restore()

    def _build(self, indices: list[int]) -> Any:
        if self._fetch_many is not None:
            return self.collate_fn(list(self._fetch_many(indices)))
        dataset = self.dataset
        return self.collate_fn([dataset[index] for index in indices])

    def __len__(self) -> int:
        """The wrapped dataset's length."""
        dataset: Any = self.dataset
        if not isinstance(dataset, Sized):
            raise TypeError(f"{type(dataset).__name__} has no len()")
        return len(dataset)
