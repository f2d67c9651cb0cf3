"""Loading is weights-only: a pickle that would run code is refused and never runs.

The malicious files here carry a correct Helios header and SHA-256 (an attacker can compute a
hash too), so what stops them is ``torch.load(weights_only=True)`` alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from helios.ckpt import FORMAT_VERSION, CheckpointError, CheckpointWarning, DirectoryCheckpointStore
from helios.ckpt._format import write_checkpoint

from .conftest import make_state


class Payload:
    """Unpickling this creates ``marker``: stands for any code an attacker wants run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def forge(path: Path, state: dict[str, Any], *, step: int) -> None:
    """A file with a valid header and hash around whatever ``state`` pickles to."""
    with path.open("w+b", buffering=0) as file:
        write_checkpoint(file, state, step=step, epoch=0, wall_time=0.0, metrics={})


def test_the_payload_is_armed(tmp_path: Path) -> None:
    # proves the tests below are meaningful: an unsafe load does run the payload
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"model": Payload(marker)}, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=False)
    assert marker.exists()


def test_malicious_checkpoint_is_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = DirectoryCheckpointStore(tmp_path / "ckpt", keep_last=None)
    store.save(make_state(1), step=1, epoch=0)
    evil = store.directory / "step-00000002.pt"
    forge(evil, {"model": {"weight": torch.ones(2), "hook": Payload(marker)}}, step=2)

    store.verify(evil)  # intact bytes: the hash cannot tell
    with pytest.raises(CheckpointError, match=r"refused to load .*step-00000002.pt.*weights_only"):
        store.load(evil)
    assert not marker.exists()
    # the newest checkpoint is malicious: loading "the latest" raises, never skips it silently
    with pytest.raises(CheckpointError, match="refused to load"):
        store.load()
    assert not marker.exists()


def test_legacy_format_and_raw_pickles_are_refused_too(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = DirectoryCheckpointStore(tmp_path / "ckpt")
    legacy = store.directory / "step-00000001.pt"
    with legacy.open("wb", buffering=0) as file:
        buffer = io.BytesIO()
        torch.save({"x": Payload(marker)}, buffer, _use_new_zipfile_serialization=False)
        forge_raw(file, buffer.getvalue(), step=1)
    with pytest.raises(CheckpointError, match="refused to load"):
        store.load(legacy)
    raw = store.directory / "step-00000002.pt"
    with raw.open("wb", buffering=0) as file:
        forge_raw(file, pickle.dumps({"x": Payload(marker)}, protocol=2), step=2)
    with pytest.raises(CheckpointError, match="refused to load"):
        store.load(raw)
    assert not marker.exists()


def forge_raw(file: Any, payload: bytes, *, step: int) -> None:
    """Write ``payload`` as it is behind a valid header, following the documented layout."""
    header = json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "helios_version": "0",
            "torch_version": "0",
            "step": step,
            "epoch": 0,
            "wall_time": 0.0,
            "metrics": {},
        }
    ).encode()
    prelude = struct.pack(
        "<10sHIQ32s32s",
        b"HELIOSCKPT",
        FORMAT_VERSION,
        len(header),
        len(payload),
        hashlib.sha256(payload).digest(),
        hashlib.sha256(header).digest(),
    )
    file.write(prelude + header + payload)


def test_a_plain_malicious_file_without_header_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = DirectoryCheckpointStore(tmp_path / "ckpt", keep_last=None)
    good = store.save(make_state(1), step=1, epoch=0)
    dropped = store.directory / "step-00000005.pt"
    torch.save({"x": Payload(marker)}, dropped)
    with pytest.warns(CheckpointWarning, match="has no Helios header"):
        assert store.latest() == good
    with pytest.raises(CheckpointError, match="has no Helios header"):
        store.load(dropped)
    assert not marker.exists()


def test_the_refusal_says_what_was_blocked(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    evil = tmp_path / "step-00000001.pt"
    forge(evil, {"hook": Payload(tmp_path / "pwned")}, step=1)
    with pytest.raises(CheckpointError) as caught:
        store.load(evil)
    message = str(caught.value)
    assert "Unsupported global: GLOBAL exec was not an allowed global" in message
    assert "\x1b" not in message
    assert "nothing from it was executed" in message
