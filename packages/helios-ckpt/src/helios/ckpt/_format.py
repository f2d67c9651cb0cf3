"""The checkpoint file format: one self-describing file per checkpoint.

Why a header inside the file rather than a sidecar manifest: a checkpoint is then exactly one
file, so writing it is exactly one ``os.replace`` — the single commit point. With a sidecar,
data and manifest are two renames, and a crash between them (or while overwriting the same
step) leaves a pair that disagree; the old checkpoint of that step would already be gone. With
a header there is no such window: a reader sees the old file or the new one, whole. Pruning is
one ``unlink``, and listing reads only the first few hundred bytes of each file.

Layout (all integers little-endian)::

    offset  size  field
    0       10    magic  b"HELIOSCKPT"
    10      2     format version (u16)
    12      4     header length H (u32)
    16      8     payload size (u64)
    24      32    payload SHA-256 (raw digest)
    56      32    header SHA-256 (raw digest of the H header bytes)
    88      H     header: UTF-8 JSON (format and helios versions, step, epoch, wall time, metrics)
    88+H    ...   payload: the bytes ``torch.save`` wrote, unchanged

The payload's size and SHA-256 are what :class:`~helios.core.CheckpointInfo` reports, so
``tail -c SIZE FILE | sha256sum`` reproduces ``info.sha256``. The header has its own digest, so a
flipped byte anywhere in the file is caught. The payload is written straight into the file
(no copy of the state in memory) while a second thread reads it back from the page cache and
hashes it; the payload's ``fsync`` overlaps the end of the hash, and the fixed-size prelude is
written last, over the placeholder it reserved, and synced on its own (one page).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import torch

from helios.core import CheckpointError, CheckpointInfo
from helios.core import __version__ as helios_version

__all__ = [
    "FORMAT_VERSION",
    "CheckpointIntegrityError",
    "CheckpointRefusedError",
    "Header",
    "MapLocation",
    "fsync_directory",
    "load_payload",
    "read_header",
    "record_fields",
    "verify_payload",
    "write_checkpoint",
]

#: The version of the file layout and of the state's conventions that this code writes.
FORMAT_VERSION = 1

MapLocation = torch.device | str | dict[str, str] | Callable[[Any, str], Any] | None

_MAGIC = b"HELIOSCKPT"
_PRELUDE = struct.Struct("<10sHIQ32s32s")
PRELUDE_SIZE = _PRELUDE.size  # 88
_MAX_HEADER = 1 << 24  # a header is a few hundred bytes; anything larger is damage
_READ_CHUNK = 8 << 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def record_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a file header and a sharded manifest share, typed; raises on a bad one.

    Raises:
        KeyError, TypeError, ValueError: a field is missing or of the wrong kind.
    """
    return {
        "format_version": int(fields["format_version"]),
        "helios_version": str(fields["helios_version"]),
        "torch_version": str(fields["torch_version"]),
        "step": int(fields["step"]),
        "epoch": int(fields["epoch"]),
        "wall_time": float(fields["wall_time"]),
        "metrics": {str(k): float(v) for k, v in dict(fields["metrics"]).items()},
    }


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (names created, renamed, removed) durable."""
    if os.name == "nt":  # Windows cannot open a folder for fsync; its renames are journaled
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointIntegrityError(CheckpointError):
    """The file is not an intact checkpoint: empty, truncated, corrupt or without a header.

    Distinguished from other :class:`CheckpointError` s because these are the failures a store
    falls back from (to the previous good checkpoint); a file that is intact but refused (a
    pickle that would run code) is never silently skipped.
    """


class CheckpointRefusedError(CheckpointError):
    """The file is intact, but its payload holds objects ``weights_only`` loading refuses."""


@dataclasses.dataclass(frozen=True)
class Header:
    """Everything the header of a checkpoint file says, and where its payload starts."""

    path: Path
    format_version: int
    helios_version: str
    torch_version: str
    step: int
    epoch: int
    wall_time: float
    metrics: dict[str, float]
    size: int
    sha256: str
    payload_offset: int

    def info(self) -> CheckpointInfo:
        """The :class:`CheckpointInfo` this header describes."""
        return CheckpointInfo(
            path=self.path,
            step=self.step,
            epoch=self.epoch,
            metrics=dict(self.metrics),
            wall_time=self.wall_time,
            size=self.size,
            sha256=self.sha256,
        )


class _PayloadSink:
    """The file object ``torch.save`` writes to: bytes go to the file; progress is published.

    The payload is hashed by :class:`_TrailingHasher`, which reads back what was written (from
    the page cache) on a second thread, behind the writer: the hash is never on the writer's
    path, and it needs no copy of the bytes ``torch.save`` passes (some of which it frees as
    soon as ``write`` returns).
    """

    def __init__(self, file: IO[bytes], hasher: _TrailingHasher) -> None:
        self._file = file
        self._hasher = hasher
        self.size = 0
        self.error: BaseException | None = None

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        try:
            self._write_all(view)
        except BaseException as exc:
            # torch's writer reports a failed write as "unexpected pos" (or "enforce fail"):
            # keep the real cause, be it a full disk or an exception a signal handler raised
            self.error = exc
            raise
        self.size += len(view)
        self._hasher.written(self.size)
        return len(view)

    def _write_all(self, view: memoryview) -> None:
        while view:
            written = self._file.write(view)
            if written is None:  # non-blocking raw file with nothing written: not ours
                raise OSError("the checkpoint file accepted no bytes")
            view = view[written:]

    def flush(self) -> None:
        self._file.flush()


def _read_at(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset`` without moving the file position (the writer's)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


class _TrailingHasher:
    """SHA-256 of a file region that is being written, read back behind the writer.

    The writer reports how many payload bytes it has written; this thread reads them back with
    ``pread`` (page-cache hits) and hashes them, chunk by chunk, while the writer goes on. When
    the writer is done, what is left to hash overlaps the file's ``fsync``. Both ``pread`` and
    ``hashlib`` release the GIL, so on a machine with a spare core the hash costs little time.
    """

    _CHUNK = 4 << 20

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self._offset = offset
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._available = 0
        self._done = False
        self._condition = threading.Condition()

    def written(self, size: int) -> None:
        """The writer has written ``size`` payload bytes in all."""
        with self._condition:
            self._available = size
            if size - self._hashed >= self._CHUNK:
                self._condition.notify()

    def finish(self) -> None:
        """The writer has written everything."""
        with self._condition:
            self._done = True
            self._condition.notify()

    def run(self) -> bytes:
        """Hash until the writer has finished and every byte is hashed; the raw digest."""
        buffer = bytearray(self._CHUNK)
        view = memoryview(buffer)
        while True:
            with self._condition:
                while not self._done and self._available - self._hashed < self._CHUNK:
                    self._condition.wait()
                available, done = self._available, self._done
            while self._hashed < available:
                count = min(self._CHUNK, available - self._hashed)
                got = _read_at(self._fd, view[:count], self._offset + self._hashed)
                if got <= 0:
                    raise OSError(f"read back {got} bytes of the checkpoint being written")
                self._hash.update(view[:got])
                self._hashed += got
            if done:
                return self._hash.digest()


_CRC32_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_crc32() -> Iterator[None]:
    """Skip the zip CRC-32 of each record while this thread's ``torch.save`` runs.

    The SHA-256 over the whole payload already detects any damage; a CRC-32 per record is a
    second full pass over the bytes for nothing. torch keeps the option in a global that its
    writer reads once, when created; a ``torch.save`` of another thread that starts inside this
    window merely writes no CRC either (its file still loads).
    """
    with _CRC32_LOCK:
        previous = torch.serialization.get_crc32_options()
        torch.serialization.set_crc32_options(False)
        try:
            yield
        finally:
            torch.serialization.set_crc32_options(previous)


def write_checkpoint(
    file: IO[bytes],
    state: Mapping[str, Any],
    *,
    step: int,
    epoch: int,
    wall_time: float,
    metrics: Mapping[str, float],
) -> tuple[int, str]:
    """Write a whole checkpoint into ``file`` (open to read and write, empty, unbuffered), synced.

    The payload is read back from ``file`` to be hashed, so it must be readable too.

    Returns:
        The payload's size in bytes and its hex SHA-256.
    """
    header = json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "helios_version": helios_version,
            "torch_version": str(torch.__version__),
            "step": step,
            "epoch": epoch,
            "wall_time": wall_time,
            "metrics": dict(metrics),
        },
        sort_keys=True,
    ).encode()
    file.write(bytes(PRELUDE_SIZE))  # placeholder: a crash before the end leaves no magic
    file.write(header)
    fd = file.fileno()
    hasher = _TrailingHasher(fd, PRELUDE_SIZE + len(header))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="helios-ckpt") as pool:
        hashed = pool.submit(hasher.run)
        sink = _PayloadSink(file, hasher)
        try:
            with _without_crc32():
                torch.save(dict(state), sink)  # type: ignore[arg-type]
        except Exception as exc:
            if sink.error is not None:
                raise sink.error from exc
            raise
        finally:
            hasher.finish()
        # The payload goes to disk while the hash catches up.
        synced = pool.submit(os.fsync, fd)
        digest = hashed.result()
        synced.result()
    prelude = _PRELUDE.pack(
        _MAGIC,
        FORMAT_VERSION,
        len(header),
        sink.size,
        digest,
        hashlib.sha256(header).digest(),
    )
    file.seek(0)
    file.write(prelude)
    file.flush()
    # Only the first page changed, not the size: its data alone needs syncing.
    getattr(os, "fdatasync", os.fsync)(fd)
    return sink.size, digest.hex()


def read_header(file: IO[bytes], path: Path) -> Header:
    """Read and check the header of the checkpoint open as ``file`` (the payload is not read).

    Raises:
        CheckpointIntegrityError: the file is empty, truncated, has no Helios header, or its
            header is corrupt.
    """
    file_size = os.fstat(file.fileno()).st_size
    if file_size == 0:
        raise CheckpointIntegrityError(f"checkpoint {path} is empty (0 bytes)")
    file.seek(0)
    prelude = file.read(PRELUDE_SIZE)
    if not prelude.startswith(_MAGIC[: len(prelude)]) or len(prelude) < len(_MAGIC):
        raise CheckpointIntegrityError(
            f"checkpoint {path} has no Helios header (missing manifest): it was not written by "
            f"helios.ckpt, or its first bytes were overwritten (starts with {prelude[:10]!r})"
        )
    if len(prelude) < PRELUDE_SIZE:
        raise CheckpointIntegrityError(
            f"checkpoint {path} is truncated: {file_size} bytes, shorter than its "
            f"{PRELUDE_SIZE}-byte header"
        )
    magic, version, header_size, size, payload_digest, header_digest = _PRELUDE.unpack(prelude)
    if magic != _MAGIC:
        raise CheckpointIntegrityError(
            f"checkpoint {path} has no Helios header (missing manifest): it was not written by "
            f"helios.ckpt, or its first bytes were overwritten (starts with {magic!r})"
        )
    if header_size > _MAX_HEADER:
        raise CheckpointIntegrityError(
            f"checkpoint {path} has a corrupt header: it claims {header_size} header bytes"
        )
    raw = file.read(header_size)
    if len(raw) < header_size:
        raise CheckpointIntegrityError(
            f"checkpoint {path} is truncated: {file_size} bytes, the header alone needs "
            f"{PRELUDE_SIZE + header_size}"
        )
    if hashlib.sha256(raw).digest() != header_digest:
        raise CheckpointIntegrityError(
            f"checkpoint {path} has a corrupt header: its SHA-256 does not match the one "
            "recorded in the file"
        )
    try:
        fields = json.loads(raw)
        header = Header(
            path=path,
            **record_fields(fields),
            size=size,
            sha256=payload_digest.hex(),
            payload_offset=PRELUDE_SIZE + header_size,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointIntegrityError(
            f"checkpoint {path} has an unreadable header ({exc!r})"
        ) from exc
    if header.format_version != version:
        raise CheckpointIntegrityError(
            f"checkpoint {path} has a corrupt header: format version {version} in the prelude, "
            f"{header.format_version} in the JSON"
        )
    expected = header.payload_offset + size
    if file_size < expected:
        raise CheckpointIntegrityError(
            f"checkpoint {path} is truncated: {file_size} bytes, its header says {expected}"
        )
    if file_size > expected:
        raise CheckpointIntegrityError(
            f"checkpoint {path} is corrupt: {file_size} bytes, its header says {expected} "
            f"({file_size - expected} unexpected bytes at the end)"
        )
    return header


def verify_payload(file: IO[bytes], header: Header) -> None:
    """Hash the payload of ``file`` and compare it with the header.

    Raises:
        CheckpointIntegrityError: the payload's SHA-256 differs from the recorded one.
    """
    digest = hashlib.sha256()
    buffer = bytearray(min(_READ_CHUNK, max(header.size, 1)))
    view = memoryview(buffer)
    file.seek(header.payload_offset)
    remaining = header.size
    while remaining:
        got = file.readinto(view[: min(remaining, len(view))])  # type: ignore[attr-defined]
        if not got:
            raise CheckpointIntegrityError(
                f"checkpoint {header.path} is truncated: it ended {remaining} bytes early"
            )
        digest.update(view[:got])
        remaining -= got
    if digest.hexdigest() != header.sha256:
        raise CheckpointIntegrityError(
            f"checkpoint {header.path} is corrupt: the SHA-256 of its {header.size} payload "
            f"bytes is {digest.hexdigest()}, its header says {header.sha256}"
        )


class _Window(io.RawIOBase):
    """A read-only view of ``length`` bytes of ``file`` from ``offset``, as a file of its own.

    ``torch.load`` addresses the zip archive from position 0; this presents the payload so
    without copying it into memory.
    """

    def __init__(self, file: IO[bytes], offset: int, length: int) -> None:
        super().__init__()
        self._file = file
        self._offset = offset
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._length - self._position))
        if count == 0:
            return 0
        self._file.seek(self._offset + self._position)
        got = self._file.readinto(view[:count])  # type: ignore[attr-defined]
        self._position += got
        return int(got)


def load_payload(file: IO[bytes], header: Header, map_location: MapLocation) -> dict[str, Any]:
    """Unpickle the payload with ``torch.load(weights_only=True)``; the payload is not hashed.

    Raises:
        CheckpointError: the payload holds something other than tensors and plain data (a
            pickle that would run code is refused before anything runs), or is not a dict.
    """
    window = io.BufferedReader(_Window(file, header.payload_offset, header.size), _READ_CHUNK)
    try:
        state = torch.load(window, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointRefusedError(
            f"refused to load checkpoint {header.path}: it holds objects that "
            "torch.load(weights_only=True) does not allow, and unpickling them could run "
            f"arbitrary code; nothing from it was executed ({_first_line(exc)})"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"could not load checkpoint {header.path}: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {header.path} holds a {type(state).__name__}, expected a dict"
        )
    return state


def _first_line(exc: BaseException) -> str:
    """The telling line of ``exc``'s message (torch's unpickler explains at length)."""
    lines = [_ANSI.sub("", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line.split(" Please use", 1)[0]
    return lines[0] if lines else type(exc).__name__
