"""Seeded bijections of ``range(n)``: the random order of an epoch without a list of indices.

A shuffled epoch is usually ``torch.randperm(n)``: 8 bytes per sample (8 GB for 10^9 samples)
and O(n) work before the first index. Here the order is a *function* from a position to an
index, a keyed Feistel network over the next power of two with cycle-walking back into
``range(n)`` (Black & Rogaway, "Ciphers with arbitrary finite domains", 2002). Any position is
computed on its own in O(1), so resuming at position ``p`` costs the same for every ``p``, and
memory is bounded by the chunk being computed. Positions are computed in NumPy chunks, never one
by one in Python.

The same 64-bit mixer (SplitMix64's finaliser) derives the round keys from ``(seed, epoch)`` and
the per-sample seeds from ``(seed, epoch, position)``.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["GOLDEN", "MASK64", "FeistelPermutation", "derive_key", "mix64", "mix_int"]

MASK64: Final = (1 << 64) - 1
GOLDEN: Final = 0x9E3779B97F4A7C15
_ROUNDS: Final = 4

IndexArray = npt.NDArray[np.int64]
SeedArray = npt.NDArray[np.uint64]


def mix64(values: npt.NDArray[np.uint64]) -> SeedArray:
    """SplitMix64's finaliser applied element-wise: a bijection of 64-bit words that mixes well.

    Args:
        values: unsigned 64-bit words (not modified).

    Returns:
        The mixed words, same shape.
    """
    z = values.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def mix_int(value: int) -> int:
    """:func:`mix64` of one Python int (taken modulo 2**64)."""
    z = value & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def derive_key(*parts: int) -> int:
    """A 64-bit key that depends on every part and on their order.

    ``derive_key(seed, epoch, stream)`` gives unrelated keys for neighbouring seeds, epochs and
    streams, so the order of epoch 3 says nothing about the order of epoch 4.

    Args:
        *parts: non-negative integers (taken modulo 2**64).

    Returns:
        An integer in ``[0, 2**64)``.
    """
    key = 0
    for part in parts:
        key = mix_int(key * GOLDEN + (part & MASK64) + GOLDEN)
    return key


class FeistelPermutation:
    """A keyed bijection of ``range(n)``, evaluated on arrays of positions.

    A Feistel network permutes ``range(2**k)`` for the smallest ``k`` with ``2**k >= n``
    (``k >= 2``); a position whose image falls outside ``range(n)`` is encrypted again until it
    lands inside (cycle-walking), which keeps the map a bijection of ``range(n)``. Because
    ``2**k < 2 * n``, a position needs fewer than two encryptions on average.

    Example:
        >>> import numpy as np
        >>> order = FeistelPermutation(10, key=7)
        >>> sorted(order(np.arange(10)).tolist()) == list(range(10))
        True

    Args:
        n: the size of the domain, at least 1.
        key: a 64-bit key; different keys give unrelated orders.
    """

    def __init__(self, n: int, key: int) -> None:
        """Prepare the round keys and bit widths for a domain of ``n`` positions."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        # The narrow word halves the memory traffic for every domain up to 2**32 samples.
        self._dtype: type[np.unsignedinteger[Any]] = np.uint32 if bits <= 32 else np.uint64
        word = 32 if bits <= 32 else 64
        dtype = self._dtype
        high = bits // 2
        low = bits - high
        self._low_mask = dtype((1 << low) - 1)
        self._low = dtype(low)
        self._high = dtype(high)
        self._mid_shift = dtype(word // 2 - 1)
        self._out_shift = dtype(word - high)
        self._mul1 = dtype(0x9E3779B1 if word == 32 else 0x9E3779B97F4A7C15)
        self._mul2 = dtype(0x85EBCA6B if word == 32 else 0xBF58476D1CE4E5B9)
        word_mask = (1 << word) - 1
        self._keys = [dtype(derive_key(key, r) & word_mask) for r in range(_ROUNDS)]

    def _encrypt(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        # One round maps (high, low) to (low, high ^ F(low)): a bijection of k-bit words for any
        # split. F is multiply-xorshift-multiply, whose top bits depend on every input bit.
        for key in self._keys:
            low = x & self._low_mask
            mixed = (low ^ key) * self._mul1
            mixed ^= mixed >> self._mid_shift
            mixed *= self._mul2
            x = (low << self._high) | ((x >> self._low) ^ (mixed >> self._out_shift))
        return x

    def __call__(self, positions: npt.NDArray[np.integer[Any]]) -> IndexArray:
        """The indices at ``positions`` (each in ``range(n)``) of this order.

        Args:
            positions: integer positions in ``[0, n)``.

        Returns:
            The permuted indices as ``int64``, same shape.
        """
        image = self._encrypt(positions.astype(self._dtype))
        outside = np.flatnonzero(image >= self.n)
        while outside.size:
            walked = self._encrypt(image[outside])
            image[outside] = walked
            outside = outside[walked >= self.n]
        return image.astype(np.int64)
