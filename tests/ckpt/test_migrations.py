"""Format versions: older checkpoints are migrated, newer ones are refused clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from helios.ckpt import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointWarning,
    DirectoryCheckpointStore,
    _format,
    _migrations,
    register_migration,
)
from helios.core import ConfigurationError


@pytest.fixture(autouse=True)
def no_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_migrations, "_MIGRATIONS", {})


def test_an_older_checkpoint_is_migrated_on_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    old = store.save({"net": {"w": torch.ones(2)}}, step=1, epoch=0)
    monkeypatch.setattr(_format, "FORMAT_VERSION", FORMAT_VERSION + 1)  # the format moves on

    with pytest.raises(
        CheckpointError, match=f"no migration is registered from format {FORMAT_VERSION}"
    ):
        store.load(old)
    with pytest.warns(CheckpointWarning, match="no migration"):
        assert store.latest() is None

    def rename_net(state: dict[str, Any]) -> dict[str, Any]:
        state["model"] = state.pop("net")
        return state

    register_migration(FORMAT_VERSION, rename_net)
    loaded = store.load()
    assert list(loaded) == ["model"]
    assert torch.equal(loaded["model"]["w"], torch.ones(2))
    store.verify(old)


def test_a_newer_checkpoint_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    store.save({"x": torch.zeros(1)}, step=1, epoch=0)
    monkeypatch.setattr(_format, "FORMAT_VERSION", FORMAT_VERSION + 5)
    newer = store.save({"x": torch.ones(1)}, step=2, epoch=0)
    monkeypatch.undo()
    monkeypatch.setattr(_migrations, "_MIGRATIONS", {})
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 5}, newer than"):
        store.load(newer)
    with pytest.warns(CheckpointWarning, match="upgrade helios-ckpt"):
        assert torch.equal(store.load()["x"], torch.zeros(1))


def test_a_failing_migration_is_a_checkpoint_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    info = store.save({"x": torch.zeros(1)}, step=1, epoch=0)
    monkeypatch.setattr(_format, "FORMAT_VERSION", FORMAT_VERSION + 1)
    register_migration(FORMAT_VERSION, lambda state: state["missing"])
    with pytest.raises(CheckpointError, match=f"from format {FORMAT_VERSION} to .*KeyError"):
        store.load(info)


def test_register_migration_checks_its_arguments() -> None:
    with pytest.raises(ConfigurationError, match="from_version must be an int >= 1, got 0"):
        register_migration(0, lambda state: state)
    with pytest.raises(ConfigurationError, match="fn must be callable"):
        register_migration(1, "rename")  # type: ignore[arg-type]
    register_migration(1, lambda state: state)
    with pytest.raises(ConfigurationError, match="already registered"):
        register_migration(1, lambda state: state)
