"""Damaged checkpoints are detected, reported by name and reason, and the last good one is used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from state_checks import assert_nested_equal

from helios.ckpt import CheckpointError, CheckpointWarning, DirectoryCheckpointStore

from .conftest import make_state


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_payload_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))


def flip_header_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    where = data.index(b'"step": ') + len(b'"step": ')
    data[where] ^= 0x01  # step 20 -> step 30 would go unnoticed without the header's own hash
    path.write_bytes(bytes(data))


def drop_manifest(path: Path) -> None:
    # a plain torch.save file: the bytes are a fine checkpoint, but nothing vouches for them
    torch.save({"model": {}}, path)


def empty(path: Path) -> None:
    path.write_bytes(b"")


def append_garbage(path: Path) -> None:
    with path.open("ab") as file:
        file.write(b"tail")


DAMAGE = {
    "truncated": (truncate, "is truncated"),
    "flipped payload byte": (flip_payload_byte, "is corrupt: the SHA-256 of its"),
    "flipped header byte": (flip_header_byte, "has a corrupt header"),
    "missing manifest": (drop_manifest, "has no Helios header"),
    "empty": (empty, r"is empty \(0 bytes\)"),
    "trailing bytes": (append_garbage, "4 unexpected bytes at the end"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=str)
def test_damaged_latest_is_reported_and_previous_good_is_used(tmp_path: Path, damage: str) -> None:
    corrupt, reason = DAMAGE[damage]
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    good = store.save(make_state(10), step=10, epoch=1)
    bad = store.save(make_state(20), step=20, epoch=2)
    corrupt(bad.path)

    with pytest.warns(CheckpointWarning, match=f"{bad.path}.*{reason}.*falling back"):
        assert store.latest() == good
    with pytest.warns(CheckpointWarning, match=f"{bad.path}.*{reason}"):
        assert_nested_equal(store.load(), make_state(10))

    # asked for by name, it is an error, never a silent substitute
    with pytest.raises(CheckpointError, match=f"{bad.path}.*{reason}"):
        store.load(bad.path)
    with pytest.raises(CheckpointError, match=f"{bad.path}.*{reason}"):
        store.verify(bad.path)
    store.verify(good)


@pytest.mark.parametrize("damage", DAMAGE, ids=str)
def test_when_every_checkpoint_is_damaged_there_is_none(tmp_path: Path, damage: str) -> None:
    corrupt, _ = DAMAGE[damage]
    store = DirectoryCheckpointStore(tmp_path)
    info = store.save(make_state(1), step=1, epoch=0)
    corrupt(info.path)
    with pytest.warns(CheckpointWarning):
        assert store.latest() is None
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointError, match="no good"):
        store.load()


def test_several_damaged_checkpoints_fall_back_past_all(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    for step in (1, 2, 3, 4):
        store.save(make_state(step), step=step, epoch=0)
    truncate(tmp_path / "step-00000004.pt")
    empty(tmp_path / "step-00000003.pt")
    with pytest.warns(CheckpointWarning) as record:
        latest = store.latest()
    assert latest is not None
    assert latest.step == 2
    assert len(record) == 2
    assert "step-00000004.pt" in str(record[0].message)
    assert "step-00000003.pt" in str(record[1].message)


def test_list_reads_headers_and_leaves_out_damaged_ones(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    for step in (1, 2, 3):
        store.save(make_state(step), step=step, epoch=0)
    empty(tmp_path / "step-00000002.pt")
    flip_payload_byte(tmp_path / "step-00000003.pt")  # header intact: listed, fails to verify
    with pytest.warns(CheckpointWarning, match="step-00000002.pt is empty"):
        assert [info.step for info in store.list()] == [1, 3]


def test_a_renamed_checkpoint_is_not_trusted(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    store.save(make_state(1), step=1, epoch=0)
    info = store.save(make_state(2), step=2, epoch=0)
    info.path.rename(tmp_path / "step-00000009.pt")
    with pytest.warns(CheckpointWarning, match="is misnamed: its header says step 2"):
        latest = store.latest()
    assert latest is not None
    assert latest.step == 1
