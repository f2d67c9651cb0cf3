"""The fast paths of helios-ckpt keep their guarantees.

A save hashes its payload by reading it back behind the writer (several chunks for a large
state), and a checkpoint verified by ``latest()`` is not hashed a second time by ``load()`` —
unless the file changed in between.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from state_checks import assert_nested_equal

from helios.ckpt import CheckpointError, CheckpointWarning, DirectoryCheckpointStore, _format

from .conftest import make_state


def test_a_large_payload_is_hashed_whole_across_chunks(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    state = make_state(1, numel=5_000_000)  # 20 MB: five chunks of the trailing hasher
    info = store.save(state, step=1, epoch=0)
    data = info.path.read_bytes()
    assert info.size > 4 * _format._TrailingHasher._CHUNK
    assert hashlib.sha256(data[-info.size :]).hexdigest() == info.sha256
    assert_nested_equal(store.load(info), state)


def counting_verify(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []
    real = _format.verify_payload

    def verify(file: Any, header: _format.Header) -> None:
        hashed.append(header.path)
        real(file, header)

    monkeypatch.setattr(_format, "verify_payload", verify)
    return hashed


def test_latest_then_load_hashes_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = DirectoryCheckpointStore(tmp_path, keep_last=None)
    writer.save(make_state(1), step=1, epoch=0)
    writer.save(make_state(2), step=2, epoch=0)
    hashed = counting_verify(monkeypatch)
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)  # as a resumed run opens it
    info = store.latest()
    assert info is not None
    assert_nested_equal(store.load(info, map_location="cpu"), make_state(2))
    assert hashed == [info.path]


def test_a_file_changed_after_latest_is_hashed_again_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    store.save(make_state(1), step=1, epoch=0)
    store.save(make_state(2), step=2, epoch=0)
    hashed = counting_verify(monkeypatch)
    info = store.latest()
    assert info is not None
    with open(info.path, "r+b") as file:  # one flipped payload byte, same size
        file.seek(-10, os.SEEK_END)
        byte = file.read(1)
        file.seek(-10, os.SEEK_END)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="corrupt"):
        store.load(info)
    assert hashed == [info.path, info.path]
    with pytest.warns(CheckpointWarning, match="corrupt"):
        assert_nested_equal(store.load(), make_state(1))  # the previous good one


def test_a_file_replaced_after_latest_is_hashed_again(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    store.save(make_state(1), step=1, epoch=0)
    info = store.latest()
    assert info is not None
    DirectoryCheckpointStore(tmp_path, keep_last=None).save(make_state(7), step=1, epoch=0)
    with pytest.raises(CheckpointError, match="replaced since it was listed"):
        store.load(info)
    assert torch.equal(store.load()["model"]["bias"], make_state(7)["model"]["bias"])
