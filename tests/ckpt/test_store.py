"""DirectoryCheckpointStore: the protocol, round trips, listing, overwrites, arguments."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from state_checks import assert_nested_equal

from helios.ckpt import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointInfo,
    DirectoryCheckpointStore,
)
from helios.core import CheckpointStore, ConfigurationError
from helios.core import __version__ as helios_version

from .conftest import make_state


def test_it_is_a_checkpoint_store(tmp_path: Path) -> None:
    assert isinstance(DirectoryCheckpointStore(tmp_path), CheckpointStore)
    assert isinstance(DirectoryCheckpointStore(tmp_path, async_save=True), CheckpointStore)


def test_folder_is_created_and_empty_store_has_nothing(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path / "a" / "b")
    assert store.directory.is_dir()
    assert store.list() == []
    assert store.latest() is None
    assert store.best() is None
    with pytest.raises(CheckpointError, match="no good checkpoint"):
        store.load()


def test_round_trip_is_exact_and_info_describes_the_file(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    state = make_state(7)
    state["extras"] = {
        "ordered": OrderedDict(a=1),
        "tuple": (1, 2.5, "x"),
        "size": torch.Size([2, 3]),
        "dtype": torch.float16,
        "none": None,
        "half": torch.arange(5, dtype=torch.float16),
        "bytes": b"\x00\x01",
        "big_int": 2**80,
    }
    info = store.save(state, step=40, epoch=3, metrics={"loss": 0.5, "acc": 1})
    assert info.path == tmp_path / "step-00000040.pt"
    assert (info.step, info.epoch) == (40, 3)
    assert dict(info.metrics) == {"loss": 0.5, "acc": 1.0}
    data = info.path.read_bytes()
    assert info.size > 0
    import hashlib

    assert hashlib.sha256(data[-info.size :]).hexdigest() == info.sha256
    assert_nested_equal(store.load(info), state)
    assert_nested_equal(store.load(), state)
    assert_nested_equal(store.load("step-00000040.pt"), state)
    assert_nested_equal(store.load(str(info.path)), state)
    assert store.latest() == info
    assert store.list() == [info]


def test_header_records_versions_and_position(tmp_path: Path) -> None:
    import json
    import struct

    store = DirectoryCheckpointStore(tmp_path)
    info = store.save(make_state(1), step=1, epoch=0, metrics={"loss": 2.0})
    data = info.path.read_bytes()
    magic, version, header_size = struct.unpack_from("<10sHI", data)
    assert magic == b"HELIOSCKPT"
    assert version == FORMAT_VERSION
    header = json.loads(data[88 : 88 + header_size])
    assert header["format_version"] == FORMAT_VERSION
    assert header["helios_version"] == helios_version
    assert header["torch_version"] == str(torch.__version__)
    assert (header["step"], header["epoch"], header["metrics"]) == (1, 0, {"loss": 2.0})
    assert header["wall_time"] == info.wall_time
    assert len(data) == 88 + header_size + info.size


def test_list_is_oldest_first_and_latest_is_highest_step(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    for step in (30, 10, 20):
        store.save(make_state(step), step=step, epoch=0)
    assert [info.step for info in store.list()] == [10, 20, 30]
    latest = store.latest()
    assert latest is not None
    assert latest.step == 30
    assert_nested_equal(store.load(), make_state(30))


def test_saving_a_step_again_replaces_it(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    first = store.save(make_state(1), step=5, epoch=0)
    second = store.save(make_state(2), step=5, epoch=1, metrics={"loss": 1.0})
    assert first.path == second.path
    assert first.sha256 != second.sha256
    assert [info.step for info in store.list()] == [5]
    assert_nested_equal(store.load(), make_state(2))
    assert sorted(os.listdir(tmp_path)) == ["step-00000005.pt"]  # no temporary files left
    # the info of the replaced checkpoint no longer describes the file
    with pytest.raises(CheckpointError, match="replaced since it was listed"):
        store.load(first)


def test_map_location_moves_tensors(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.save(make_state(3), step=3, epoch=0)
    on_meta = store.load(map_location="meta")
    assert on_meta["model"]["weight"].device.type == "meta"
    assert on_meta["model"]["weight"].shape == (64,)
    on_meta = store.load(map_location=torch.device("meta"))
    assert on_meta["model"]["bias"].is_meta
    seen: list[str] = []

    def to_cpu(storage: Any, location: str) -> Any:
        seen.append(location)
        return storage

    assert_nested_equal(store.load(map_location=to_cpu), make_state(3))
    assert seen
    assert set(seen) == {"cpu"}
    assert_nested_equal(store.load(map_location={"cuda:0": "cpu"}), make_state(3))


def test_state_that_would_not_load_back_is_refused_at_save(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)

    class Opaque:
        pass

    with pytest.raises(CheckpointError, match=r"state\['model'\]\['thing'\] is a .*Opaque"):
        store.save({"model": {"thing": Opaque()}}, step=1, epoch=0)
    with pytest.raises(CheckpointError, match=r"state\['model'\] is a .*Linear"):
        store.save({"model": torch.nn.Linear(2, 2)}, step=1, epoch=0)
    with pytest.raises(CheckpointError, match="must be a mapping"):
        store.save([1, 2], step=1, epoch=0)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep_last": 0}, "keep_last must be an int >= 1, got 0"),
        ({"keep_last": 2.5}, "keep_last must be an int >= 1, got 2.5"),
        ({"keep_best": -1}, "keep_best must be an int >= 0, got -1"),
        ({"keep_best": 2}, "keep_best=2 needs best_metric"),
        ({"best_metric": ""}, "best_metric must be a non-empty str"),
        ({"best_mode": "low"}, "best_mode must be 'min' or 'max', got 'low'"),
        ({"async_save": "yes"}, "async_save must be a bool"),
    ],
)
def test_bad_arguments_are_configuration_errors(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        DirectoryCheckpointStore(tmp_path, **kwargs)


def test_bad_save_arguments_are_configuration_errors(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    with pytest.raises(ConfigurationError, match="step must be an int >= 0, got -1"):
        store.save(make_state(1), step=-1, epoch=0)
    with pytest.raises(ConfigurationError, match="epoch must be an int >= 0, got True"):
        store.save(make_state(1), step=1, epoch=True)
    with pytest.raises(ConfigurationError, match=r"metrics\['loss'\] must be a number"):
        store.save(make_state(1), step=1, epoch=0, metrics={"loss": "low"})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="ref must be a CheckpointInfo"):
        store.load(42)  # type: ignore[arg-type]


def test_folder_that_cannot_be_created_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CheckpointError, match="cannot create the checkpoint folder"):
        DirectoryCheckpointStore(tmp_path / "file" / "checkpoints")


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    missing = tmp_path / "step-00000009.pt"
    with pytest.raises(CheckpointError, match=f"{missing} does not exist"):
        store.load(missing)
    with pytest.raises(CheckpointError, match="does not exist"):
        store.verify(CheckpointInfo(path=missing, step=9, epoch=0))


def test_closed_store_refuses_to_save(tmp_path: Path) -> None:
    with DirectoryCheckpointStore(tmp_path) as store:
        store.save(make_state(1), step=1, epoch=0)
    store.close()  # twice is harmless
    with pytest.raises(CheckpointError, match="is closed"):
        store.save(make_state(2), step=2, epoch=0)
    assert store.latest() is not None  # reading still works


def test_file_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        info = DirectoryCheckpointStore(tmp_path).save(make_state(1), step=1, epoch=0)
    finally:
        os.umask(old)
    assert info.path.stat().st_mode & 0o777 == 0o644
