"""``DirectoryCheckpointStore``: the default :class:`~helios.core.CheckpointStore`.

One folder, one file per step (``step-00000040.pt``, format in :mod:`helios.ckpt._format`).
What it promises and how:

* **Atomic.** A checkpoint is written to a hidden temporary file in the same folder, flushed,
  fsynced, renamed into place with ``os.replace`` and the folder fsynced. A crash or SIGKILL at
  any moment leaves the old file or the new one, never half of one; saving a step twice
  replaces it just as atomically. Temporary files of killed saves are removed by the next save,
  or at once by :meth:`~DirectoryCheckpointStore.remove_temporary_files` (which the one writer
  of a folder calls when it opens it, under its run folder's lock).
* **Verified.** Size and SHA-256 of every file are checked on :meth:`latest`, :meth:`best`,
  :meth:`verify` and :meth:`load`. A damaged file is reported with a
  :class:`~helios.ckpt.CheckpointWarning` naming it and why, and the newest good one is used;
  asking for a damaged one by name raises :class:`~helios.core.CheckpointError`.
* **Safe.** Always ``torch.load(weights_only=True)``: a pickle that would run code is refused
  and nothing in it runs. Such a file is never silently skipped either — it raises.
* **Regular files only.** Anything named like a checkpoint that is not a regular file (a FIFO,
  a folder, a symlink to a device) is reported as damaged and never read, so nothing blocks.
  :meth:`~DirectoryCheckpointStore.inspect` gives a verdict on every such entry.
* **Retention** prunes only after the new checkpoint is durable, and the new one is always
  kept, so the only good checkpoint is never deleted. Files it cannot read are left alone.
* **Asynchronous saves** (``async_save=True``) copy the tensors to the CPU and write them on a
  background thread; the next save waits for the previous one, and a background failure is
  raised by the next :meth:`save`, :meth:`wait` or :meth:`close` (and logged when it happens).

* **Sharded checkpoints** (:meth:`~DirectoryCheckpointStore.save_sharded`, a collective) are
  folders ``step-00000040/`` beside the files, written by every rank through
  ``torch.distributed.checkpoint`` and committed by rank 0 with a manifest of every file's size
  and SHA-256 (:mod:`helios.ckpt._sharded`). Listing, ``latest``, ``best``, fallback, retention
  and ``weights_only``-safe loading treat both kinds alike, mixed in one folder.

One process writes a folder's files (in distributed training, rank 0), all ranks together its
sharded checkpoints; any number may read it.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import logging
import os
import re
import secrets
import stat
import threading
import time
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import torch

from helios.ckpt import _format, _migrations, _retention, _sharded, _snapshot
from helios.ckpt._warnings import CheckpointWarning
from helios.core import CheckpointError, CheckpointInfo, ConfigurationError, HeliosError

__all__ = ["CheckpointEntry", "DirectoryCheckpointStore", "consolidate"]

_LOG = logging.getLogger("helios.ckpt")
_NAME = re.compile(r"^step-(\d{8,})\.pt$")
_TEMPORARY = re.compile(r"^\.step-\d{8,}\.pt\.[0-9a-f]+\.tmp$")
_SHARDED_NAME = re.compile(r"^step-(\d{8,})$")
_SHARDED_TEMPORARY = re.compile(r"^\.step-\d{8,}\.[0-9a-f]+\.tmp$")
_O_FLAGS = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
# O_NONBLOCK: opening a FIFO must not wait for a writer; the file is refused right after anyway.
_O_READ = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)

Ref = CheckpointInfo | str | os.PathLike[str]
_VERIFIED_KEPT = 8


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's content may have: any write, truncation or rename."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _file_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def _folder_name(step: int) -> str:
    return f"step-{step:08d}"


def _is_sharded(path: Path) -> bool:
    """Whether ``path`` names a sharded checkpoint (a folder) rather than a file."""
    return _SHARDED_NAME.match(path.name) is not None or (path / _sharded.MANIFEST).exists()


def _tree_size(path: str | os.PathLike[str]) -> int:
    total = 0
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
    return total


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(path: Path, mode: int) -> str:
    link = ""
    with contextlib.suppress(OSError):
        if path.is_symlink():
            link = f" (a symlink to {os.readlink(path)})"
    return f"checkpoint {path} is not a regular file: it is {_kind(mode)}{link}"


def _open_regular(path: Path) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file, without ever blocking.

    Raises:
        FileNotFoundError: it does not exist.
        CheckpointIntegrityError: it is a FIFO, a folder, a device, or cannot be opened.
    """
    try:
        fd = os.open(path, _O_READ)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _format.CheckpointIntegrityError(
            f"checkpoint {path} cannot be opened: {exc}"
        ) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _format.CheckpointIntegrityError(_not_regular(path, mode))
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclasses.dataclass(frozen=True)
class CheckpointEntry:
    """One entry of a checkpoint folder and what :meth:`DirectoryCheckpointStore.inspect` found.

    Attributes:
        path: the entry.
        verdict: ``"ok"``; ``"CORRUPT"`` (empty, truncated, zeroed, with extra bytes, a damaged
            header or payload, misnamed); ``"REFUSED"`` (intact, but holds objects that
            ``weights_only`` loading refuses); ``"not a regular file"`` (a FIFO, a folder, a
            symlink to a device: never opened further); ``"temporary"`` (left by a save that
            was killed); ``"ignored"`` (a ``.pt`` file not named ``step-NNNNNNNN.pt``, which
            resume never reads).
        reason: why, in one sentence (empty for ``"ok"``).
        size: bytes on disk (0 for what is not a regular file).
        step: the step its name says, ``None`` for entries not named like a checkpoint.
        info: the header's description, for a file whose header could be read.
    """

    path: Path
    verdict: str
    reason: str = ""
    size: int = 0
    step: int | None = None
    info: CheckpointInfo | None = None


def _check_count(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class DirectoryCheckpointStore:
    """A folder of atomic, verified checkpoints with retention and fallback to the last good one.

    Example:
        >>> store = DirectoryCheckpointStore("runs/x/checkpoints", keep_last=3)  # doctest: +SKIP
        >>> store.save({"model": net.state_dict()}, step=100, epoch=0)  # doctest: +SKIP
        >>> state = store.load()  # the newest checkpoint that verifies  # doctest: +SKIP

    Args:
        directory: the folder; created (with its parents) if missing.
        keep_last: how many of the newest checkpoints to keep; ``None`` keeps all.
        keep_best: how many of the best checkpoints by ``best_metric`` to keep besides.
        best_metric: the metric (a key of ``metrics`` given to :meth:`save`) that ranks
            checkpoints for ``keep_best`` and :meth:`best`.
        best_mode: ``"min"`` when lower is better, ``"max"`` when higher is.
        async_save: write checkpoints on a background thread (see :meth:`save`).

    Raises:
        ConfigurationError: an argument has a value the store cannot work with.
        CheckpointError: the folder cannot be created.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep_last: int | None = 3,
        keep_best: int = 0,
        best_metric: str | None = None,
        best_mode: Literal["min", "max"] = "min",
        async_save: bool = False,
    ) -> None:
        if keep_last is not None:
            _check_count("keep_last", keep_last, minimum=1)
        _check_count("keep_best", keep_best, minimum=0)
        if best_metric is not None and (not isinstance(best_metric, str) or not best_metric):
            raise ConfigurationError(
                f"best_metric must be a non-empty str or None, got {best_metric!r}"
            )
        if keep_best > 0 and best_metric is None:
            raise ConfigurationError(
                f"keep_best={keep_best} needs best_metric: the name of the metric that ranks "
                "checkpoints (e.g. best_metric='valid/loss')"
            )
        if best_mode not in ("min", "max"):
            raise ConfigurationError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        if not isinstance(async_save, bool):
            raise ConfigurationError(f"async_save must be a bool, got {async_save!r}")
        self._directory = Path(directory)
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"cannot create the checkpoint folder {self._directory}: {exc}"
            ) from exc
        self._keep_last = keep_last
        self._keep_best = keep_best
        self._best_metric = best_metric
        self._best_mode: Literal["min", "max"] = best_mode
        self._async = async_save
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[CheckpointInfo] | None = None
        self._pending_step = -1
        self._staging: builtins.list[torch.Tensor] = []  # CPU copies, reused by async saves
        self._lock = threading.Lock()
        self._closed = False
        # Files this store hashed, by identity (device, inode, size, mtime, ctime): loading one
        # of them right after latest()/best()/verify() does not hash 200 MB a second time. Any
        # write or rename changes the identity, so a file changed since is hashed again.
        self._verified: dict[Path, tuple[tuple[int, ...], _format.Header]] = {}
        self._verified_folders: dict[Path, tuple[Any, _sharded.Manifest]] = {}
        self._async_groups: dict[int, _sharded.Group] = {}
        self._stagers: dict[int, _sharded.ReusingStager] = {}

    @property
    def directory(self) -> Path:
        """The folder that holds the checkpoints."""
        return self._directory

    def __repr__(self) -> str:
        """Show the folder and the retention rule."""
        return (
            f"{type(self).__name__}({str(self._directory)!r}, keep_last={self._keep_last}, "
            f"keep_best={self._keep_best}, best_metric={self._best_metric!r}, "
            f"best_mode={self._best_mode!r}, async_save={self._async})"
        )

    def __enter__(self) -> DirectoryCheckpointStore:
        """Use the store in a ``with`` block that closes it."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store (finishing a pending save)."""
        self.close()

    # ------------------------------------------------------------------ saving

    def save(
        self,
        state: Mapping[str, Any],
        *,
        step: int,
        epoch: int,
        metrics: Mapping[str, float] | None = None,
    ) -> CheckpointInfo:
        """Write ``state`` as the checkpoint of ``step``, then prune by the retention rule.

        Synchronous by default: when it returns, the checkpoint is durable. With
        ``async_save=True`` it first waits for the previous save, copies every tensor to the
        CPU and returns while a background thread writes; the returned info then has
        ``size=0`` and ``sha256=""`` (not known yet) — :meth:`wait` makes it durable.

        Args:
            state: a mapping of names to tensors, numbers, strings, lists and dicts (state
                dicts); anything ``torch.load(weights_only=True)`` would refuse is rejected.
            step: the optimizer step; saving a step again replaces its checkpoint atomically.
            epoch: the epoch the state belongs to.
            metrics: numbers to record with it (``best_metric`` among them for ``keep_best``).

        Returns:
            What the store knows of the new checkpoint.

        Raises:
            ConfigurationError: ``step``, ``epoch`` or ``metrics`` are malformed.
            CheckpointError: the state holds something that would not load back, the file could
                not be written (disk full, permission denied: earlier checkpoints are intact),
                the previous asynchronous save failed, or the store is closed.
        """
        self._check_open()
        _check_count("step", step, minimum=0)
        _check_count("epoch", epoch, minimum=0)
        clean_metrics = self._check_metrics(metrics)
        wall_time = time.time()
        if not self._async:
            prepared = _snapshot.prepare(state, copy_to_cpu=False)
            return self._write(prepared, step, epoch, clean_metrics, wall_time)
        self._raise_pending()  # also frees the staging buffers of the previous save
        snapshot = _snapshot.prepare(state, copy_to_cpu=True, staging=self._staging)
        self._submit(
            step, self._write_in_background, snapshot, step, epoch, clean_metrics, wall_time
        )
        return CheckpointInfo(
            path=self._directory / _file_name(step),
            step=step,
            epoch=epoch,
            metrics=clean_metrics,
            wall_time=wall_time,
        )

    def wait(self) -> None:
        """Block until every save started so far is durable.

        Raises:
            CheckpointError: the pending asynchronous save failed.
        """
        self._raise_pending()

    # ------------------------------------------------------------------ sharded checkpoints

    def save_sharded(
        self,
        state: Mapping[str, Any],
        *,
        step: int,
        epoch: int,
        metrics: Mapping[str, float] | None = None,
        process_group: Any = None,
        asynchronous: bool = False,
    ) -> CheckpointInfo:
        """Collective: every rank writes its part of ``state`` as the checkpoint of ``step``.

        Every rank of ``process_group`` calls it with its own state dict: DTensors (as
        ``torch.distributed.checkpoint.state_dict.get_state_dict`` returns them), plain tensors
        (equal on every rank: one copy is kept) and plain values. The shards are written with
        ``torch.distributed.checkpoint`` into a temporary folder, every file fsynced; rank 0
        then writes the manifest (each file's size and SHA-256), the commit record, renames the
        folder to ``step-NNNNNNNN`` and fsyncs the parent; retention prunes after that. A value
        that differs between ranks must be under a key of its own on each rank (see
        :mod:`helios.ckpt._sharded`), or only one rank's value is kept.

        Without a running process group it writes a sharded checkpoint of one rank.

        Args:
            state: this rank's state dict.
            step: the optimizer step; saving a step again replaces its checkpoint.
            epoch: the epoch the state belongs to.
            metrics: numbers to record with it (``best_metric`` among them for ``keep_best``);
                rank 0's are recorded.
            process_group: the group of the ranks that save (default: the whole job).
            asynchronous: return once this rank's state is copied (``dcp.async_save``); the
                shards are written and committed in the background. :meth:`wait` blocks until
                the commit and raises its failure, as do the next save and :meth:`close`. The
                first asynchronous save creates a Gloo group for the background collectives.

        Returns:
            What the store knows of the new checkpoint (with ``asynchronous``, ``size=0`` and
            ``sha256=""`` until it is committed); the same on every rank.

        Raises:
            ConfigurationError: ``step``, ``epoch``, ``metrics`` or ``asynchronous`` are malformed.
            CheckpointError: the state holds something that would not load back, a rank could
                not write or hash its shards (on every rank; earlier checkpoints are intact), the
                previous asynchronous save failed, or the store is closed.
        """
        self._check_open()
        _check_count("step", step, minimum=0)
        _check_count("epoch", epoch, minimum=0)
        clean_metrics = self._check_metrics(metrics)
        if not isinstance(asynchronous, bool):
            raise ConfigurationError(f"asynchronous must be a bool, got {asynchronous!r}")
        _sharded.check_state(state)
        group = _sharded.group_of(process_group)
        self._raise_pending()
        temporary, wall_time = self._start_sharded(step, group)
        final = self._directory / _folder_name(step)
        record = {
            "step": step,
            "epoch": epoch,
            "metrics": clean_metrics,
            "wall_time": wall_time,
            "int_keys": _sharded.int_keys(state),
        }
        if not asynchronous:
            _sharded.write(state, temporary, group)
            return self._commit_sharded(temporary, final, group, record)
        background = self._async_group(group)
        stager = self._stagers.setdefault(id(background.group), _sharded.ReusingStager())
        written = _sharded.write_asynchronously(state, temporary, background, stager)
        self._submit(
            step, self._commit_in_background, written, temporary, final, background, record
        )
        return CheckpointInfo(
            path=final,
            step=step,
            epoch=epoch,
            metrics=clean_metrics,
            wall_time=wall_time,
            sharded=True,
        )

    def _async_group(self, group: _sharded.Group) -> _sharded.Group:
        key = id(group.group)
        if key not in self._async_groups:
            self._async_groups[key] = _sharded.dedicated_group(group)
        return self._async_groups[key]

    def _start_sharded(self, step: int, group: _sharded.Group) -> tuple[Path, float]:
        """Collective: rank 0 creates the temporary folder; every rank learns its name."""
        token, error = "", None
        if group.rank == 0:
            try:
                self._remove_sharded_temporaries()
                token = secrets.token_hex(8)
                (self._directory / _sharded.temporary_name(step, token)).mkdir()
            except OSError as exc:
                error = f"could not create a folder in {self._directory}: {exc}"
        token, wall_time, error = group.broadcast((token, time.time(), error))
        if error is not None:
            raise CheckpointError(f"could not write the sharded checkpoint of step {step}: {error}")
        return self._directory / _sharded.temporary_name(step, token), wall_time

    def _commit_in_background(
        self,
        written: Any,
        temporary: Path,
        final: Path,
        group: _sharded.Group,
        record: dict[str, Any],
    ) -> CheckpointInfo:
        try:
            try:
                written.result()
            except Exception as exc:
                raise _sharded.dcp_error(
                    exc, f"could not write sharded checkpoint {final}"
                ) from exc
            return self._commit_sharded(temporary, final, group, record)
        except BaseException:
            _LOG.exception(
                "background save of step %d to %s failed; the error is raised by the next "
                "save(), wait() or close()",
                record["step"],
                self._directory,
            )
            raise

    def _commit_sharded(
        self, temporary: Path, final: Path, group: _sharded.Group, record: dict[str, Any]
    ) -> CheckpointInfo:
        """Collective: every rank hashes its shards; rank 0 seals the folder; all agree."""
        hashed: dict[str, tuple[int, str]] = {}
        error = None
        try:
            hashed = _sharded.hash_own_files(temporary, group.rank)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        gathered = group.all_gather((hashed, error))
        outcome: tuple[bool, Any] = (False, "")
        if group.rank == 0:
            try:
                _sharded.seal(temporary, final, gathered, **record)
                outcome = (True, _sharded.read_manifest(final).info())
            except Exception as exc:
                _sharded.remove_tree(temporary)
                outcome = (
                    False,
                    f"could not write sharded checkpoint {final}: {exc} "
                    "(earlier checkpoints are untouched)",
                )
        committed, result = group.broadcast(outcome)
        if not committed:
            raise CheckpointError(result)
        if group.rank == 0:
            self._prune(result)
        return result  # type: ignore[no-any-return]

    def _remove_sharded_temporaries(self) -> builtins.list[tuple[Path, int]]:
        removed = []
        for entry in self._scan():
            if _SHARDED_TEMPORARY.match(entry.name) and entry.is_dir(follow_symlinks=False):
                size = _tree_size(entry.path)
                _sharded.remove_tree(Path(entry.path))
                removed.append((Path(entry.path), size))
        return removed

    def load_sharded(
        self,
        ref: Ref | None,
        state: MutableMapping[str, Any],
        *,
        process_group: Any = None,
    ) -> None:
        """Collective: fill ``state`` in place from a sharded checkpoint, resharding as needed.

        Rank 0 verifies the checkpoint (every file's size and SHA-256 against the manifest) and
        tells the others; then every rank reads the parts of its tensors (DTensors on any mesh
        and world size: DCP reshards) and the plain values its ``state`` has keys for. Every
        non-tensor value and DCP's index are loaded without running code.

        Args:
            ref: the sharded checkpoint (a :class:`CheckpointInfo` or its folder); ``None`` for
                the newest checkpoint that verifies (damaged newer ones are reported and skipped).
            state: this rank's state dict, its tensors allocated as they should be filled.
            process_group: the group of the ranks that load (default: the whole job).

        Raises:
            CheckpointError: on every rank: the checkpoint is damaged, missing, not sharded, holds
                objects ``weights_only`` refuses, or does not fit ``state``.
        """
        self._check_open()
        group = _sharded.group_of(process_group)
        outcome: tuple[str, str] = ("", "")
        if group.rank == 0:
            try:
                outcome = ("", str(self._choose_sharded(ref)))
            except CheckpointError as exc:
                kind = "refused" if isinstance(exc, _format.CheckpointRefusedError) else "error"
                outcome = (kind, str(exc))
        kind, text = group.broadcast(outcome)
        if kind == "refused":
            raise _format.CheckpointRefusedError(text)
        if kind:
            raise _format.CheckpointIntegrityError(text)
        _sharded.load_into(Path(text), state, group)

    def _choose_sharded(self, ref: Ref | None) -> Path:
        if ref is None:
            latest = self.latest()
            if latest is None:
                raise CheckpointError(f"no good checkpoint in {self._directory}")
            path = Path(latest.path)
        else:
            path, expected = self._resolve(ref)
            if _is_sharded(path):
                self._verified_manifest(path, expected)
            else:
                self._verified_header(path, expected)
        if not _is_sharded(path):
            raise CheckpointError(
                f"checkpoint {path} is a single file, not a sharded checkpoint: read it with "
                "load() on each rank"
            )
        return path

    def _verified_manifest(self, path: Path, expected: CheckpointInfo | None) -> _sharded.Manifest:
        """The manifest of the sharded checkpoint ``path`` once every file of it verified."""
        try:
            identity = _sharded.identity(path)
        except FileNotFoundError as exc:
            raise CheckpointError(f"checkpoint {path} does not exist") from exc
        except OSError as exc:
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {path} cannot be read: {exc}"
            ) from exc
        known = self._verified_folders.get(path)
        if known is not None and known[0] == identity:
            manifest = known[1]
        else:
            try:
                manifest = _sharded.verify_folder(path)
            except OSError as exc:
                raise _format.CheckpointIntegrityError(
                    f"sharded checkpoint {path} cannot be read: {exc}"
                ) from exc
            self._check_sharded_name(path, manifest)
            try:
                _migrations.check_migratable(manifest.format_version, path)
            except CheckpointError as exc:
                raise _format.CheckpointIntegrityError(str(exc)) from exc
            if len(self._verified_folders) >= _VERIFIED_KEPT:
                self._verified_folders.pop(next(iter(self._verified_folders)))
            self._verified_folders[path] = (identity, manifest)
        if expected is not None and expected.sha256 and expected.sha256 != manifest.sha256:
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {path} was replaced since it was listed: the SHA-256 of its "
                f"manifest is {manifest.sha256}, the CheckpointInfo says {expected.sha256}"
            )
        return manifest

    @staticmethod
    def _check_sharded_name(path: Path, manifest: _sharded.Manifest) -> None:
        match = _SHARDED_NAME.match(path.name)
        if match and int(match.group(1)) != manifest.step:
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {path} is misnamed: its manifest says step {manifest.step}"
            )

    def close(self) -> None:
        """Finish a pending save and stop the background thread; the store is not used after.

        Closing twice is harmless.

        Raises:
            CheckpointError: the pending asynchronous save failed.
        """
        if self._closed:
            return
        try:
            self._raise_pending()
        finally:
            self._closed = True
            self._staging = []
            self._stagers = {}
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"the checkpoint store of {self._directory} is closed")

    def _check_metrics(self, metrics: Mapping[str, float] | None) -> dict[str, float]:
        if metrics is None:
            return {}
        if not isinstance(metrics, Mapping):
            raise ConfigurationError(
                f"metrics must be a mapping of names to numbers, got {type(metrics).__name__}"
            )
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            if not isinstance(name, str):
                raise ConfigurationError(f"metrics keys must be str, got {name!r}")
            try:
                clean[name] = float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(
                    f"metrics[{name!r}] must be a number, got {value!r}"
                ) from exc
        return clean

    def _submit(self, step: int, work: Callable[..., Any], *args: Any) -> None:
        """Run ``work(*args)`` on the one background thread: the pending save of ``step``."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="helios-ckpt-save"
                )
            self._pending = self._executor.submit(work, *args)
            self._pending_step = step

    def _raise_pending(self) -> None:
        with self._lock:
            pending, step = self._pending, self._pending_step
            self._pending = None
        if pending is None:
            return
        try:
            pending.result()
        except BaseException as exc:
            raise CheckpointError(
                f"the background save of step {step} to {self._directory} failed: {exc}"
            ) from exc

    def _write_in_background(
        self,
        state: dict[str, Any],
        step: int,
        epoch: int,
        metrics: dict[str, float],
        wall_time: float,
    ) -> CheckpointInfo:
        try:
            return self._write(state, step, epoch, metrics, wall_time)
        except BaseException:
            _LOG.exception(
                "background save of step %d to %s failed; the error is raised by the next "
                "save(), wait() or close()",
                step,
                self._directory,
            )
            raise

    def _write(
        self,
        state: dict[str, Any],
        step: int,
        epoch: int,
        metrics: dict[str, float],
        wall_time: float,
    ) -> CheckpointInfo:
        final = self._directory / _file_name(step)
        temporary: str | None = None
        try:
            # Not mkstemp: its files are private (0600); a checkpoint gets the umask's mode.
            temporary = str(self._directory / f".{final.name}.{secrets.token_hex(8)}.tmp")
            fd = os.open(temporary, _O_FLAGS, 0o666)
            with open(fd, "r+b", buffering=0) as file:
                size, sha256 = _format.write_checkpoint(
                    file, state, step=step, epoch=epoch, wall_time=wall_time, metrics=metrics
                )
            self._clear_the_way(final)
            os.replace(temporary, final)
            temporary = None
            _format.fsync_directory(self._directory)
        except HeliosError as exc:
            if not isinstance(exc, CheckpointError):
                raise  # raised into the write by the caller's own code (a signal handler)
            raise CheckpointError(
                f"could not write checkpoint {final}: {exc} (earlier checkpoints are untouched)"
            ) from exc
        except Exception as exc:
            raise CheckpointError(
                f"could not write checkpoint {final}: {type(exc).__name__}: {exc} "
                "(earlier checkpoints are untouched)"
            ) from exc
        finally:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
        info = CheckpointInfo(
            path=final,
            step=step,
            epoch=epoch,
            metrics=metrics,
            wall_time=wall_time,
            size=size,
            sha256=sha256,
        )
        self._prune(info)
        return info

    def remove_temporary_files(self) -> builtins.list[tuple[Path, int]]:
        """Delete the temporary files that saves killed mid-write left in the folder.

        Only the one process that writes the folder may call this (the trainer does when it
        opens the store under its run folder's lock): another writer's save in progress would
        lose its file.

        Returns:
            The files removed and their sizes in bytes.
        """
        removed: builtins.list[tuple[Path, int]] = []
        for entry in self._scan():
            if not _TEMPORARY.match(entry.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                size = entry.stat(follow_symlinks=False).st_size
                if entry.is_dir(follow_symlinks=False):
                    continue
                os.unlink(entry.path)
                removed.append((Path(entry.path), size))
        removed.extend(self._remove_sharded_temporaries())
        if removed:
            _LOG.info(
                "removed %d temporary file(s) of interrupted saves from %s (%d bytes)",
                len(removed),
                self._directory,
                sum(size for _, size in removed),
            )
            _format.fsync_directory(self._directory)
        return removed

    def set_aside(self, after_step: int) -> tuple[Path, builtins.list[Path]] | None:
        """Move every entry named like a checkpoint of a step after ``after_step`` aside.

        Used when a run goes back to an older checkpoint: the newer ones belong to an abandoned
        line of training and must neither be resumed from later nor be deleted silently. They go
        to a new subfolder ``abandoned-<UTC time>-after-step-<N>`` of the folder, which
        resume and retention never look into. Only the folder's one writer may call this.

        Args:
            after_step: the step of the checkpoint the run goes back to.

        Returns:
            The subfolder and the entries moved there, or ``None`` when there was nothing newer.
        """
        _check_count("after_step", after_step, minimum=0)
        newer = []
        for entry in self._scan():
            match = _NAME.match(entry.name) or _SHARDED_NAME.match(entry.name)
            if match and int(match.group(1)) > after_step:
                newer.append(Path(entry.path))
        if not newer:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self._directory / f"abandoned-{stamp}-after-step-{after_step:08d}"
        suffix = 1
        while aside.exists():
            suffix += 1
            aside = aside.with_name(f"abandoned-{stamp}-after-step-{after_step:08d}-{suffix}")
        try:
            aside.mkdir()
            moved = []
            for path in newer:
                os.replace(path, aside / path.name)
                moved.append(aside / path.name)
            _format.fsync_directory(aside)
            _format.fsync_directory(self._directory)
        except OSError as exc:
            raise CheckpointError(
                f"cannot move the checkpoints after step {after_step} of {self._directory} "
                f"aside to {aside}: {exc}"
            ) from exc
        return aside, moved

    def _scan(self) -> builtins.list[os.DirEntry[str]]:
        try:
            with os.scandir(self._directory) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CheckpointError(
                f"cannot list the checkpoint folder {self._directory}: {exc}"
            ) from exc

    def inspect(self, *, load: bool = False) -> builtins.list[CheckpointEntry]:
        """A verdict on every entry that looks like a checkpoint, and on leftover temporaries.

        Every name ``step-NNNNNNNN.pt`` is checked as :meth:`verify` does (size, SHA-256,
        header, name); other ``*.pt`` files are listed as ``"ignored"`` and temporary files of
        killed saves as ``"temporary"``, each with its size. Nothing that is not a regular file
        is read. Ordered by step (entries without one last, by name).

        Args:
            load: also unpickle each intact checkpoint (``weights_only``, to the CPU, one at a
                time) so that an intact file that loading would refuse shows as ``"REFUSED"``.

        Returns:
            One :class:`CheckpointEntry` per entry.
        """
        found: builtins.list[CheckpointEntry] = []
        for entry in self._scan():
            path = Path(entry.path)
            match = _NAME.match(entry.name)
            sharded = _SHARDED_NAME.match(entry.name)
            if match:
                found.append(self._inspect_checkpoint(path, int(match.group(1)), load=load))
            elif sharded:
                found.append(self._inspect_sharded(path, int(sharded.group(1)), load=load))
            elif _SHARDED_TEMPORARY.match(entry.name) and entry.is_dir(follow_symlinks=False):
                reason = "left by a sharded save that was interrupted"
                found.append(CheckpointEntry(path, "temporary", reason, _tree_size(path)))
            elif _TEMPORARY.match(entry.name) or entry.name.endswith(".pt"):
                temporary = _TEMPORARY.match(entry.name) is not None
                verdict, reason = (
                    ("temporary", "left by a save that was interrupted")
                    if temporary
                    else ("ignored", "not named step-NNNNNNNN.pt, so resume never reads it")
                )
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
                found.append(CheckpointEntry(path, verdict, reason, size))
        return sorted(
            found, key=lambda e: (e.step is None, e.step if e.step is not None else 0, e.path)
        )

    def _inspect_checkpoint(self, path: Path, step: int, *, load: bool) -> CheckpointEntry:
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            return CheckpointEntry(path, "CORRUPT", f"cannot be read: {exc}", 0, step)
        if not stat.S_ISREG(mode):
            reason = _not_regular(path, mode).split(" is not a regular file: ", 1)[1]
            return CheckpointEntry(path, "not a regular file", reason, 0, step)
        size = os.stat(path).st_size
        header: _format.Header | None = None
        try:
            with _open_regular(path) as file:
                header = self._open_verified(path, None, file)
                if load:
                    _format.load_payload(file, header, "cpu")
        except _format.CheckpointRefusedError as exc:
            info = header.info() if header is not None else None
            return CheckpointEntry(path, "REFUSED", str(exc), size, step, info)
        except (CheckpointError, OSError) as exc:
            info = header.info() if header is not None else None
            return CheckpointEntry(path, "CORRUPT", str(exc), size, step, info)
        return CheckpointEntry(path, "ok", "", size, step, header.info())

    def _inspect_sharded(self, path: Path, step: int, *, load: bool) -> CheckpointEntry:
        if not path.is_dir():
            return CheckpointEntry(
                path, "CORRUPT", "named like a sharded checkpoint, not a folder", 0, step
            )
        size = _tree_size(path)
        manifest: _sharded.Manifest | None = None
        try:
            manifest = self._verified_manifest(path, None)
            if load:
                _sharded.load_full(path)
        except _format.CheckpointRefusedError as exc:
            info = manifest.info() if manifest is not None else None
            return CheckpointEntry(path, "REFUSED", str(exc), size, step, info)
        except (CheckpointError, OSError) as exc:
            info = manifest.info() if manifest is not None else None
            return CheckpointEntry(path, "CORRUPT", str(exc), size, step, info)
        return CheckpointEntry(path, "ok", "", size, step, manifest.info())

    def _delete(self, info: CheckpointInfo) -> None:
        """Delete a checkpoint; a sharded one is first renamed, so no half of it keeps its name."""
        path = Path(info.path)
        if not info.sharded:
            path.unlink()
            return
        aside = path.with_name(_sharded.temporary_name(info.step, secrets.token_hex(8)))
        os.replace(path, aside)
        _sharded.remove_tree(aside)

    def _clear_the_way(self, final: Path) -> None:
        """Move a folder that has the checkpoint's name aside: a rename cannot replace it."""
        try:
            if not stat.S_ISDIR(os.lstat(final).st_mode):
                return  # a file, FIFO or symlink is replaced by the rename itself
        except FileNotFoundError:
            return
        aside = final.with_name(f"{final.name}.{secrets.token_hex(4)}.not-a-checkpoint")
        os.replace(final, aside)
        warnings.warn(
            f"{final} was a directory, not a checkpoint: moved it to {aside} to write the "
            "checkpoint in its place",
            CheckpointWarning,
            stacklevel=4,
        )

    def _prune(self, newest: CheckpointInfo) -> None:
        """Delete what retention does not keep; runs only after ``newest`` is durable."""
        removed = False
        try:
            for entry in os.scandir(self._directory):
                if _TEMPORARY.match(entry.name):  # left by a save that was killed
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed = True
            if self._keep_last is not None:
                infos = [info for info in self._headers(warn=False) if info.path != newest.path]
                kept = _retention.select_kept(
                    [*infos, newest],
                    keep_last=self._keep_last,
                    keep_best=self._keep_best,
                    metric=self._best_metric,
                    mode=self._best_mode,
                )
                for info in infos:
                    if info.path not in kept:
                        with contextlib.suppress(FileNotFoundError):
                            self._delete(info)
                            removed = True
            if removed:
                _format.fsync_directory(self._directory)
        except OSError as exc:
            # The new checkpoint is durable; failing to tidy old ones must not fail the save.
            warnings.warn(
                f"checkpoint {newest.path} was saved, but pruning old checkpoints in "
                f"{self._directory} failed: {exc}",
                CheckpointWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ reading

    def _paths_by_step(self) -> builtins.list[tuple[int, Path]]:
        """Every entry named like a checkpoint, file or sharded folder, by step."""
        found = []
        for entry in self._scan():
            match = _NAME.match(entry.name) or _SHARDED_NAME.match(entry.name)
            if match:
                found.append((int(match.group(1)), self._directory / entry.name))
        return sorted(found)

    def _headers(self, *, warn: bool) -> builtins.list[CheckpointInfo]:
        infos = []
        for _, path in self._paths_by_step():
            try:
                if _is_sharded(path):
                    manifest = _sharded.read_manifest(path)
                    self._check_sharded_name(path, manifest)
                    infos.append(manifest.info())
                    continue
                with _open_regular(path) as file:
                    infos.append(self._checked_header(file, path).info())
            except FileNotFoundError:  # pruned or replaced while we looked
                continue
            except CheckpointError as exc:
                if warn:
                    warnings.warn(f"{exc}; skipping it", CheckpointWarning, stacklevel=3)
        return infos

    def _checked_header(self, file: IO[bytes], path: Path) -> _format.Header:
        try:
            header = _format.read_header(file, path)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise _format.CheckpointIntegrityError(
                f"checkpoint {path} cannot be read: {exc}"
            ) from exc
        match = _NAME.match(path.name)
        if match and int(match.group(1)) != header.step:
            raise _format.CheckpointIntegrityError(
                f"checkpoint {path} is misnamed: its header says step {header.step}"
            )
        return header

    def list(self) -> builtins.list[CheckpointInfo]:
        """Every checkpoint the folder holds, oldest first (by step); only headers are read.

        Files whose header is damaged are left out, each with a
        :class:`~helios.ckpt.CheckpointWarning`; payloads are not hashed (see :meth:`verify`).
        """
        return self._headers(warn=True)

    def _resolve(self, ref: Ref) -> tuple[Path, CheckpointInfo | None]:
        if isinstance(ref, CheckpointInfo):
            return Path(ref.path), ref
        if not isinstance(ref, str | os.PathLike):
            raise ConfigurationError(
                f"ref must be a CheckpointInfo, a path or None, got {type(ref).__name__}"
            )
        path = Path(ref)
        if not path.is_absolute() and not path.exists() and (self._directory / path).exists():
            path = self._directory / path
        return path, None

    def _open_verified(
        self, path: Path, expected: CheckpointInfo | None, file: IO[bytes]
    ) -> _format.Header:
        identity = _identity(os.fstat(file.fileno()))
        known = self._verified.get(path)
        if known is not None and known[0] == identity:
            header = known[1]
            self._check_expected(path, expected, header)
            return header
        header = self._checked_header(file, path)
        self._check_expected(path, expected, header)
        try:
            _format.verify_payload(file, header)
        except OSError as exc:
            raise _format.CheckpointIntegrityError(
                f"checkpoint {path} cannot be read: {exc}"
            ) from exc
        try:
            _migrations.check_migratable(header.format_version, path)
        except CheckpointError as exc:
            raise _format.CheckpointIntegrityError(str(exc)) from exc
        if len(self._verified) >= _VERIFIED_KEPT:
            self._verified.pop(next(iter(self._verified)))
        self._verified[path] = (identity, header)
        return header

    @staticmethod
    def _check_expected(
        path: Path, expected: CheckpointInfo | None, header: _format.Header
    ) -> None:
        if expected is not None and expected.sha256 and expected.sha256 != header.sha256:
            raise _format.CheckpointIntegrityError(
                f"checkpoint {path} was replaced since it was listed: its SHA-256 is "
                f"{header.sha256}, the CheckpointInfo says {expected.sha256}"
            )

    def verify(self, ref: Ref) -> None:
        """Check that a checkpoint is whole: header, size, SHA-256 and a readable format.

        Args:
            ref: a :class:`CheckpointInfo` or a path (relative paths may name a file of this
                folder, e.g. ``"step-00000040.pt"``).

        Raises:
            CheckpointError: naming the file and what is wrong with it.
        """
        path, expected = self._resolve(ref)
        self._verified_info(path, expected)

    def _verified_info(self, path: Path, expected: CheckpointInfo | None) -> CheckpointInfo:
        """A checkpoint of either kind, once it verified."""
        if _is_sharded(path):
            return self._verified_manifest(path, expected).info()
        return self._verified_header(path, expected).info()

    def _verified_header(self, path: Path, expected: CheckpointInfo | None) -> _format.Header:
        try:
            with _open_regular(path) as file:
                return self._open_verified(path, expected, file)
        except FileNotFoundError as exc:
            raise CheckpointError(f"checkpoint {path} does not exist") from exc
        except OSError as exc:
            raise _format.CheckpointIntegrityError(
                f"checkpoint {path} cannot be read: {exc}"
            ) from exc

    def _warn_skipped(self, exc: CheckpointError) -> None:
        warnings.warn(
            f"{exc}; falling back to an older checkpoint", CheckpointWarning, stacklevel=4
        )

    def latest(self) -> CheckpointInfo | None:
        """The newest checkpoint that verifies, or ``None`` if the folder holds no good one.

        Each newer checkpoint that fails verification is reported with a
        :class:`~helios.ckpt.CheckpointWarning` naming the file and why. A save still running
        in the background is not waited for.
        """
        for _, path in reversed(self._paths_by_step()):
            try:
                return self._verified_info(path, None)
            except _format.CheckpointIntegrityError as exc:
                self._warn_skipped(exc)
            except CheckpointError:  # vanished (pruned or replaced) since listed
                continue
        return None

    def best(self) -> CheckpointInfo | None:
        """The best checkpoint by ``best_metric`` that verifies (``None`` without a metric).

        Between equal values the older checkpoint wins; damaged ones are reported and skipped.
        """
        if self._best_metric is None:
            return None
        ranked = _retention.rank_by_metric(
            self._headers(warn=True), self._best_metric, self._best_mode
        )
        for info in ranked:
            try:
                return self._verified_info(Path(info.path), info)
            except _format.CheckpointIntegrityError as exc:
                self._warn_skipped(exc)
            except CheckpointError:
                continue
        return None

    def load(
        self,
        ref: Ref | None = None,
        *,
        map_location: _format.MapLocation = None,
    ) -> dict[str, Any]:
        """Read, verify and return a checkpoint's state, migrated to the current format.

        Always ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts
        come back; a pickle that would run code is refused before any of it runs.

        Args:
            ref: the checkpoint (a :class:`CheckpointInfo` or a path); ``None`` loads the newest
                one that verifies, reporting and skipping damaged newer ones.
            map_location: where tensors go, as for ``torch.load``: a device (``"cpu"``,
                ``"cuda:1"``), a dict such as ``{"cuda:0": "cuda:1"}``, or a callable.

        Returns:
            The state as saved (the dict given to :meth:`save`).

        Raises:
            CheckpointError: ``ref`` is damaged or missing, it holds objects that
                ``weights_only`` refuses, or (``ref=None``) the folder has no good checkpoint.
        """
        if ref is not None:
            path, expected = self._resolve(ref)
            return self._load_path(path, expected, map_location)
        paths = self._paths_by_step()
        for _, path in reversed(paths):
            try:
                return self._load_path(path, None, map_location)
            except _format.CheckpointIntegrityError as exc:
                self._warn_skipped(exc)
            except CheckpointError as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    continue
                raise
        raise CheckpointError(
            f"no good checkpoint in {self._directory} "
            f"({len(paths)} checkpoint file(s) found, none verified)"
        )

    def _load_path(
        self,
        path: Path,
        expected: CheckpointInfo | None,
        map_location: _format.MapLocation,
    ) -> dict[str, Any]:
        if _is_sharded(path):
            manifest = self._verified_manifest(path, expected)
            state = _sharded.restore_int_keys(_sharded.load_full(path), manifest.int_keys)
            state = _sharded.map_tensors(state, map_location)
            return _migrations.migrate(state, manifest.format_version, path)
        try:
            with _open_regular(path) as file:
                header = self._open_verified(path, expected, file)
                state = _format.load_payload(file, header, map_location)
        except FileNotFoundError as exc:
            raise CheckpointError(f"checkpoint {path} does not exist") from exc
        except OSError as exc:
            raise _format.CheckpointIntegrityError(
                f"checkpoint {path} cannot be read: {exc}"
            ) from exc
        return _migrations.migrate(state, header.format_version, path)


def consolidate(folder: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Write one ordinary Helios checkpoint file holding the whole state of a sharded one.

    The sharded checkpoint is verified (every file's size and SHA-256 against its manifest),
    read whole in this process (every sharded tensor gathered into one plain CPU tensor, every
    object loaded ``weights_only``) and written to ``output`` as :meth:`DirectoryCheckpointStore.
    save` writes a file: atomically, with the same step, epoch, metrics and wall time in its
    header. The file loads with :meth:`DirectoryCheckpointStore.load` (and so with
    ``Trainer.test``, ``helios export``...) on any number of processes.

    Example:
        >>> consolidate("runs/x/checkpoints/step-00000400", "model-400.pt")  # doctest: +SKIP

    Args:
        folder: the sharded checkpoint (``RUN_DIR/checkpoints/step-NNNNNNNN``).
        output: the file to write (its folder must exist; an existing file is replaced).

    Returns:
        ``output``.

    Raises:
        ConfigurationError: ``output`` is a folder or lies inside ``folder``.
        CheckpointError: ``folder`` is not a sharded checkpoint, is damaged, holds objects
            ``weights_only`` refuses, or ``output`` cannot be written.
    """
    source = Path(folder)
    target = Path(output)
    if target.is_dir():
        raise ConfigurationError(f"output={str(target)!r} is a folder; expected a file to write")
    if not source.is_dir() or not (source / _sharded.MANIFEST).exists():
        raise CheckpointError(
            f"{str(source)!r} is not a sharded checkpoint: expected a folder such as "
            "RUN_DIR/checkpoints/step-00000400 holding a manifest.json"
        )
    if target.resolve().is_relative_to(source.resolve()):
        raise ConfigurationError(
            f"output={str(target)!r} lies inside the sharded checkpoint {str(source)!r}; "
            "expected a file outside it"
        )
    store = DirectoryCheckpointStore(source.parent, keep_last=None)
    try:
        info = store._verified_info(source, None)
        state = store.load(source)
    finally:
        store.close()
    written = str(target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp"))
    temporary: str | None = written
    try:
        fd = os.open(written, _O_FLAGS, 0o666)
        with open(fd, "r+b", buffering=0) as file:
            _format.write_checkpoint(
                file,
                state,
                step=info.step,
                epoch=info.epoch,
                wall_time=info.wall_time,
                metrics=dict(info.metrics),
            )
        os.replace(written, target)
        temporary = None
        _format.fsync_directory(target.parent if str(target.parent) else Path("."))
    except Exception as exc:
        raise CheckpointError(
            f"could not write the consolidated checkpoint {target}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return target
