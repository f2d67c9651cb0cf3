"""Ways a checkpoint file gets damaged, and odd entries named like checkpoints, for the tests.

Each function takes a good checkpoint file and damages it in place (or puts something that is not
a regular file in its place); ``VERDICTS`` says what ``DirectoryCheckpointStore.inspect`` and
``helios checkpoints`` must call each one, and a fragment of the reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zeroed(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def emptied(path: Path) -> None:
    path.write_bytes(b"")


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def header_damaged(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the JSON header, which has its own SHA-256
    path.write_bytes(bytes(data))


def appended(path: Path) -> None:
    with path.open("ab") as file:
        file.write(b"tail")


def flipped_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")


def symlink_to_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def misnamed_copy(path: Path) -> None:
    """Replace the file by a copy of its older neighbour (a good file under the wrong name)."""
    older = sorted(p for p in path.parent.glob("step-*.pt") if p.name < path.name)[-1]
    path.unlink()
    shutil.copyfile(older, path)


class Armed:
    """Unpickling this would create ``marker``: stands for any code an attacker wants run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def refused(path: Path) -> None:
    """Replace the file by an intact checkpoint (right header and hash) holding a code pickle."""
    from helios.ckpt._format import write_checkpoint

    step = int(path.name[5:13])
    with path.open("w+b", buffering=0) as file:
        state = {"model": {}, "hook": Armed(path.with_name("code-ran"))}
        write_checkpoint(file, state, step=step, epoch=0, wall_time=0.0, metrics={})


DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "truncated": (truncated, "CORRUPT", "is truncated"),
    "zeroed": (zeroed, "CORRUPT", "has no Helios header"),
    "empty": (emptied, "CORRUPT", "is empty"),
    "random": (random_bytes, "CORRUPT", "has no Helios header"),
    "header-damaged": (header_damaged, "CORRUPT", "corrupt header"),
    "appended": (appended, "CORRUPT", "unexpected bytes at the end"),
    "flipped byte": (flipped_byte, "CORRUPT", "SHA-256"),
    "fifo": (fifo, "not a regular file", "a FIFO"),
    "directory": (directory, "not a regular file", "a directory"),
    "symlink to /dev/zero": (symlink_to_dev_zero, "not a regular file", "/dev/zero"),
    "misnamed copy": (misnamed_copy, "CORRUPT", "misnamed"),
}
