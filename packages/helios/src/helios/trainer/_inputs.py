"""Checks of what the user hands to ``fit``, ``test``, ``predict`` and ``export``."""

from __future__ import annotations

import torch

from helios.core import ConfigurationError, DataSource, Model, check_model_initialised

__all__ = ["check_model"]


def check_model(model: object, datamodule: object) -> None:
    """Refuse a class for an instance, a non-Model, a torch loader or dataset as data."""
    for name, given in (("model", model), ("datamodule", datamodule)):
        if isinstance(given, type):
            raise ConfigurationError(
                f"{name} must be an instance, got the class {given.__name__}; expected "
                f"{given.__name__}() (with its arguments)"
            )
    if not isinstance(model, Model):
        raise ConfigurationError(f"model must be a helios.core.Model, got {type(model).__name__}")
    check_model_initialised(model)
    if isinstance(datamodule, torch.utils.data.DataLoader | torch.utils.data.Dataset):
        kind = "DataLoader" if isinstance(datamodule, torch.utils.data.DataLoader) else "Dataset"
        raise ConfigurationError(
            f"datamodule is a torch {kind}; the trainer needs a helios.data.DataModule, which "
            "builds the loaders itself so it can resume them exactly. Wrap your dataset:\n"
            "    class Data(DataModule):\n"
            "        def setup(self): self.add_train(train_set, DataLoaderParams(batch_size=64))"
        )
    if datamodule is not None and not isinstance(datamodule, DataSource):
        raise ConfigurationError(
            f"datamodule must implement helios.core.DataSource, got {type(datamodule).__name__}"
        )
