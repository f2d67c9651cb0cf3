"""The typed registry and the pre-filled registries (helios.core._registry)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from helios.core import (
    LOSS_REGISTRY,
    NETWORK_REGISTRY,
    OPTIMIZER_REGISTRY,
    SCHEDULER_REGISTRY,
    ConfigurationError,
    Registry,
    RegistryError,
)


def test_register_as_decorator_with_and_without_name_and_as_call() -> None:
    registry: Registry[Callable[..., object]] = Registry("things")

    @registry.register
    class Plain:
        pass

    @registry.register(name="renamed")
    class Named:
        pass

    def factory() -> str:
        return "made"

    assert registry.register(factory, name="by-call") is factory
    assert registry.get("Plain") is Plain
    assert registry.get("renamed") is Named
    assert "Named" not in registry
    assert registry.create("by-call") == "made"
    assert list(registry) == ["Plain", "renamed", "by-call"]
    assert len(registry) == 3


def test_create_passes_keyword_arguments() -> None:
    registry: Registry[Callable[..., nn.Module]] = Registry("networks")
    registry.register(nn.Linear)
    layer = registry.create("Linear", in_features=3, out_features=2)
    assert isinstance(layer, nn.Linear)
    assert layer.weight.shape == (2, 3)


def test_duplicate_name_is_a_clear_error() -> None:
    registry: Registry[object] = Registry("widgets")
    registry.register(1, name="one")
    with pytest.raises(RegistryError, match=r"widgets registry already holds 'one'"):
        registry.register(2, name="one")
    assert registry.get("one") == 1


def test_registering_a_nameless_object_needs_a_name() -> None:
    registry: Registry[object] = Registry("numbers")
    with pytest.raises(RegistryError, match="no __name__"):
        registry.register(42)


def test_miss_names_the_closest_matches() -> None:
    with pytest.raises(RegistryError) as caught:
        OPTIMIZER_REGISTRY.get("AdamWW")
    message = str(caught.value)
    assert "no entry 'AdamWW'" in message
    assert "closest: 'AdamW'" in message


def test_miss_folds_case() -> None:
    with pytest.raises(RegistryError, match="'CrossEntropyLoss'"):
        LOSS_REGISTRY.get("crossentropyloss")


def test_miss_is_a_configuration_and_lookup_error() -> None:
    with pytest.raises(ConfigurationError):
        NETWORK_REGISTRY.get("nothing-here")
    with pytest.raises(LookupError, match="empty"):
        NETWORK_REGISTRY.get("nothing-here")


def test_prefilled_registries_hold_pytorch_classes() -> None:
    assert LOSS_REGISTRY.get("CrossEntropyLoss") is nn.CrossEntropyLoss
    assert LOSS_REGISTRY.get("MSELoss") is nn.MSELoss
    assert OPTIMIZER_REGISTRY.get("AdamW") is torch.optim.AdamW
    assert OPTIMIZER_REGISTRY.get("SGD") is torch.optim.SGD
    assert SCHEDULER_REGISTRY.get("OneCycleLR") is torch.optim.lr_scheduler.OneCycleLR
    assert "ReduceLROnPlateau" in SCHEDULER_REGISTRY
    assert "Optimizer" not in OPTIMIZER_REGISTRY
    assert "LRScheduler" not in SCHEDULER_REGISTRY
    net = nn.Linear(2, 2)
    optimizer = OPTIMIZER_REGISTRY.create("SGD", params=net.parameters(), lr=0.1)
    assert isinstance(optimizer, torch.optim.SGD)
