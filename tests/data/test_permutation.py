"""The seeded bijection behind the random order (helios.data._permutation)."""

from __future__ import annotations

import numpy as np
import pytest

from helios.data import FeistelPermutation
from helios.data._permutation import derive_key, mix64


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 17, 1000, 2**16, 2**16 + 1, 123_457])
def test_is_a_permutation_of_range_n(n: int) -> None:
    order = FeistelPermutation(n, key=derive_key(3, 1))(np.arange(n))
    assert order.dtype == np.int64
    assert np.array_equal(np.sort(order), np.arange(n))


def test_beyond_32_bits_stays_in_range_and_injective() -> None:
    n = 2**33 + 5  # the 64-bit word path
    permutation = FeistelPermutation(n, key=11)
    positions = np.concatenate([np.arange(200_000), np.arange(n - 200_000, n)])
    order = permutation(positions)
    assert order.min() >= 0
    assert order.max() < n
    assert np.unique(order).size == positions.size


def test_each_position_is_computed_on_its_own() -> None:
    permutation = FeistelPermutation(100_003, key=5)
    whole = permutation(np.arange(100_003))
    picked = np.array([99_999, 7, 50_001, 0, 100_002])
    assert np.array_equal(permutation(picked), whole[picked])


def test_keys_give_unrelated_orders() -> None:
    n = 10_000
    a = FeistelPermutation(n, key=derive_key(0, 0))(np.arange(n))
    b = FeistelPermutation(n, key=derive_key(0, 1))(np.arange(n))
    again = FeistelPermutation(n, key=derive_key(0, 0))(np.arange(n))
    assert np.array_equal(a, again)
    assert np.mean(a == b) < 0.01


def test_order_is_well_shuffled() -> None:
    n = 20_000
    order = FeistelPermutation(n, key=derive_key(7, 0))(np.arange(n))
    # no trend: position and index are uncorrelated
    assert abs(np.corrcoef(np.arange(n), order)[0, 1]) < 0.03
    # neighbours in the order are not neighbours in the dataset
    assert np.median(np.abs(np.diff(order))) > n / 5
    # the first tenth of the epoch draws evenly from the ten tenths of the dataset
    counts = np.bincount(order[: n // 10] * 10 // n, minlength=10)
    assert counts.min() > 0.8 * n / 100


def test_mix64_is_deterministic_and_spreads_neighbours() -> None:
    words = mix64(np.arange(1000, dtype=np.uint64))
    assert np.array_equal(words, mix64(np.arange(1000, dtype=np.uint64)))
    assert np.unique(words).size == 1000
    assert derive_key(1, 2) != derive_key(2, 1)


def test_rejects_an_empty_domain() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FeistelPermutation(0, key=1)
