"""Loader settings and the registries (helios.data._params, helios.data._registries)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import default_collate

from helios.core import ConfigurationError, RegistryError
from helios.data import (
    COLLATE_REGISTRY,
    DATASET_REGISTRY,
    SAMPLER_REGISTRY,
    DataLoaderParams,
    ResumableSampler,
)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, r"batch_size must be an int >= 1, got 0"),
        ({"batch_size": True}, "batch_size"),
        ({"num_workers": -1}, r"num_workers must be an int >= 0, got -1"),
        ({"prefetch_factor": 2}, r"prefetch_factor=2 needs worker processes"),
        ({"prefetch_factor": 0, "num_workers": 1}, "prefetch_factor"),
        ({"persistent_workers": True}, "persistent_workers=True needs worker processes"),
        ({"timeout": 5.0}, "timeout"),
        ({"timeout": -1.0, "num_workers": 1}, "timeout"),
        ({"seed": -1}, "seed"),
        ({"shuffle": "yes"}, "shuffle"),
        ({"multiprocessing_context": "thread"}, "multiprocessing_context"),
        ({"collate_fn": 3}, "collate_fn"),
        ({"collate_fn": "default_colate"}, "'default_collate'"),
        ({"sampler": "Resumable"}, "samplers registry"),
        ({"worker_init_fn": "f"}, "worker_init_fn"),
    ],
)
def test_bad_settings_raise_a_configuration_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        DataLoaderParams(**kwargs)


def test_good_settings_are_kept_and_frozen() -> None:
    params = DataLoaderParams(
        batch_size=8, num_workers=2, prefetch_factor=4, persistent_workers=True, seed=3
    )
    assert (params.batch_size, params.prefetch_factor, params.seed) == (8, 4, 3)
    with pytest.raises(AttributeError):
        params.batch_size = 2  # type: ignore[misc]


def test_collate_fn_resolves_names_and_defaults_to_default_collate() -> None:
    assert DataLoaderParams().resolved_collate_fn() is default_collate
    assert DataLoaderParams(
        collate_fn="default_convert"
    ).resolved_collate_fn() is COLLATE_REGISTRY.get("default_convert")


def test_registries_hold_torch_datasets_and_the_sampler() -> None:
    tensors = DATASET_REGISTRY.get("TensorDataset")(torch.arange(3))
    assert len(tensors) == 3
    sampler = SAMPLER_REGISTRY.create("ResumableSampler", data_source=5, shuffle=False)
    assert isinstance(sampler, ResumableSampler)
    assert list(sampler) == [0, 1, 2, 3, 4]
    with pytest.raises(RegistryError, match="'Subset'"):
        DATASET_REGISTRY.get("subset")
