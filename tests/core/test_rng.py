"""Seeding, capture and restore of every RNG (helios.core._rng)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from state_checks import assert_nested_equal, round_trip

from helios.core import (
    ConfigurationError,
    ResumeError,
    capture_rng_state,
    numpy_generator,
    restore_rng_state,
    seed_everything,
    set_deterministic,
)


def draw() -> dict[str, object]:
    """Draw from every generator Helios captures, including the Gaussian caches."""
    return {
        "python": [random.random() for _ in range(5)] + [random.gauss(0, 1)],
        "numpy_legacy": np.concatenate([np.random.rand(5), [np.random.standard_normal()]]),
        "numpy_generator": numpy_generator().random(5),
        "torch": torch.rand(5),
        "torch_normal": torch.randn(3),
    }


def test_capture_draw_restore_draw_gives_identical_streams() -> None:
    seed_everything(11)
    draw()  # move away from the seeded state; leave a cached Gaussian behind
    random.gauss(0, 1)
    np.random.standard_normal()
    state = capture_rng_state()
    first = draw()
    restore_rng_state(state)
    second = draw()
    assert_nested_equal(first, second)


def test_state_round_trips_through_torch_save_weights_only() -> None:
    seed_everything(3)
    draw()
    state = capture_rng_state()
    loaded = round_trip(state)
    first = draw()
    restore_rng_state(loaded)
    assert_nested_equal(first, draw())


def test_seed_everything_makes_streams_repeat() -> None:
    seed_everything(5)
    first = draw()
    seed_everything(5)
    assert_nested_equal(first, draw())
    seed_everything(6)
    assert not torch.equal(first["torch"], draw()["torch"])  # type: ignore[arg-type]


def test_numpy_generator_is_reseeded_in_place() -> None:
    generator = numpy_generator()
    seed_everything(1)
    a = generator.random(3)
    seed_everything(1)
    assert numpy_generator() is generator
    assert np.array_equal(a, generator.random(3))


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "7", True])
def test_bad_seed_is_a_configuration_error(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="seed"):
        seed_everything(bad)  # type: ignore[arg-type]


def test_malformed_state_is_a_resume_error() -> None:
    state = capture_rng_state()
    del state["torch"]
    with pytest.raises(ResumeError, match="malformed"):
        restore_rng_state(state)
    with pytest.raises(ResumeError, match="version"):
        restore_rng_state({**capture_rng_state(), "version": 99})


def test_set_deterministic_switches_torch_and_back() -> None:
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()
