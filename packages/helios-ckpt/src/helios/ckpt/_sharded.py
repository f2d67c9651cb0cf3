"""Sharded checkpoints: one folder per step, written by every rank through DCP, one manifest.

Layout of ``step-00000040/`` (a folder next to the ``step-NNNNNNNN.pt`` files of the same store)::

    __0_0.distcp  __1_0.distcp ...   each rank's shards (torch.distributed.checkpoint)
    .metadata                        DCP's index of the shards (written by rank 0)
    manifest.json                    the commit record: step, epoch, metrics, and every other
                                     file's size and SHA-256 (written last, by rank 0)

How the commit is atomic: every rank writes into ``.step-00000040.<hex>.tmp/`` (DCP fsyncs each
file); each rank hashes its own shard files; rank 0 gathers the hashes (which waits for every
rank), hashes what is left, writes and fsyncs the manifest, fsyncs the folder, renames it into
place and fsyncs the parent. A folder under a checkpoint name without a manifest that verifies
is never resumed from. The manifest is JSON, and the ``.metadata`` index (a pickle) is read with
an unpickler that admits DCP's own metadata classes only, and every other object of the state
with ``torch.load(weights_only=True)``: a sharded checkpoint loads as safely as a file.

Values that are not tensors (numbers, strings, per-rank RNG states) are saved by DCP once per
key: when several ranks give the same key, one value is kept. A value that differs per rank
must be keyed by rank by the caller (``state["rng"] = {f"rank{rank}": ...}``): each rank then
saves its own key, and on load each rank asks for its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pickle
import shutil
import stat
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed._state_dict_utils import _copy_state_dict, _create_cpu_state_dict
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import (
    DefaultLoadPlanner,
    _EmptyStateDictLoadPlanner,
)
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint.staging import BlockingAsyncStager
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict, load
from torch.distributed.checkpoint.state_dict_saver import async_save, save

from helios.ckpt import _format, _snapshot
from helios.core import CheckpointError, CheckpointInfo
from helios.core import __version__ as helios_version

__all__ = [
    "MANIFEST",
    "Group",
    "Manifest",
    "ReusingStager",
    "check_state",
    "dcp_error",
    "dedicated_group",
    "group_of",
    "hash_file",
    "hash_own_files",
    "int_keys",
    "load_full",
    "load_into",
    "read_manifest",
    "remove_tree",
    "restore_int_keys",
    "seal",
    "temporary_name",
    "verify_folder",
    "write",
    "write_asynchronously",
]

MANIFEST = "manifest.json"
_KIND = "helios-sharded-checkpoint"
_CHUNK = 8 << 20


def hash_file(path: Path) -> tuple[int, str]:
    """Size and hex SHA-256 of a regular file (refusing anything else)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise _format.CheckpointIntegrityError(f"{path} is not a regular file")
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        while got := file.readinto(buffer):
            digest.update(view[:got])
            size += got
    return size, digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What the manifest of a sharded checkpoint says."""

    path: Path
    format_version: int
    helios_version: str
    torch_version: str
    step: int
    epoch: int
    wall_time: float
    metrics: dict[str, float]
    world_size: int
    files: dict[str, tuple[int, str]]
    sha256: str
    int_keys: list[list[str]] = dataclasses.field(default_factory=list)

    def info(self) -> CheckpointInfo:
        """The :class:`CheckpointInfo` this manifest describes."""
        return CheckpointInfo(
            path=self.path,
            step=self.step,
            epoch=self.epoch,
            metrics=dict(self.metrics),
            wall_time=self.wall_time,
            size=sum(size for size, _ in self.files.values()),
            sha256=self.sha256,
            sharded=True,
        )


def write_manifest(
    folder: Path,
    files: Mapping[str, tuple[int, str]],
    *,
    step: int,
    epoch: int,
    wall_time: float,
    metrics: Mapping[str, float],
    world_size: int,
    int_keys: list[list[str]],
) -> None:
    """Write ``folder/manifest.json`` and fsync it (the folder is fsynced by the caller)."""
    record = {
        "kind": _KIND,
        "format_version": _format.FORMAT_VERSION,
        "helios_version": helios_version,
        "torch_version": str(torch.__version__),
        "step": step,
        "epoch": epoch,
        "wall_time": wall_time,
        "metrics": dict(metrics),
        "world_size": world_size,
        "int_keys": int_keys,
        "files": {name: {"size": s, "sha256": h} for name, (s, h) in sorted(files.items())},
    }
    data = json.dumps(record, sort_keys=True, indent=1).encode()
    fd = os.open(folder / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(folder: Path) -> Manifest:
    """Read and check the manifest of ``folder`` (the shard files are not hashed).

    Raises:
        CheckpointIntegrityError: the manifest is missing, unreadable or misnamed.
    """
    path = folder / MANIFEST
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {folder} is damaged: its {MANIFEST} is not a regular file"
            )
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise _format.CheckpointIntegrityError(
            f"sharded checkpoint {folder} has no {MANIFEST} (missing manifest): its save never "
            "committed, or the manifest was deleted"
        ) from exc
    except OSError as exc:
        raise _format.CheckpointIntegrityError(
            f"sharded checkpoint {folder} cannot be read: {exc}"
        ) from exc
    try:
        fields = json.loads(raw)
        if fields.get("kind") != _KIND:
            raise ValueError(f"kind is {fields.get('kind')!r}, expected {_KIND!r}")
        manifest = Manifest(
            path=folder,
            **_format.record_fields(fields),
            world_size=int(fields["world_size"]),
            files={
                str(name): (int(entry["size"]), str(entry["sha256"]))
                for name, entry in dict(fields["files"]).items()
            },
            sha256=hashlib.sha256(raw).hexdigest(),
            int_keys=[[str(part) for part in path] for path in fields.get("int_keys", [])],
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _format.CheckpointIntegrityError(
            f"sharded checkpoint {folder} has an unreadable {MANIFEST} ({exc!r})"
        ) from exc
    _check_names(folder, manifest)
    return manifest


def _check_names(folder: Path, manifest: Manifest) -> None:
    for name in manifest.files:
        if name in ("", ".", "..", MANIFEST) or "/" in name or "\\" in name:
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {folder} has a corrupt {MANIFEST}: it names {name!r}"
            )
    if ".metadata" not in manifest.files:
        raise _format.CheckpointIntegrityError(
            f"sharded checkpoint {folder} has a corrupt {MANIFEST}: it lists no .metadata"
        )


def identity(folder: Path) -> tuple[tuple[str, int, int, int, int], ...]:
    """What changes whenever a file of ``folder`` may have changed (for the verified cache)."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            found.append(
                (entry.name, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            )
    return tuple(sorted(found))


def verify_folder(folder: Path) -> Manifest:
    """Check every file of a sharded checkpoint against its manifest: size and SHA-256.

    Raises:
        CheckpointIntegrityError: the manifest is missing or damaged, a file is missing,
            truncated, altered, not a regular file, or the folder holds a file it does not list.
    """
    manifest = read_manifest(folder)
    present = {entry.name for entry in os.scandir(folder)} - {MANIFEST}
    for name in sorted(present - set(manifest.files)):
        raise _format.CheckpointIntegrityError(
            f"sharded checkpoint {folder} holds {name}, which its {MANIFEST} does not list"
        )
    for name, (size, sha256) in sorted(manifest.files.items()):
        path = folder / name
        try:
            actual = os.lstat(path)
        except FileNotFoundError as exc:
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {folder} is missing {name}"
            ) from exc
        if not stat.S_ISREG(actual.st_mode):
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {folder} is damaged: {name} is not a regular file"
            )
        if actual.st_size != size:
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {folder} is corrupt: {name} has {actual.st_size} bytes, "
                f"its manifest says {size}" + (" (truncated)" if actual.st_size < size else "")
            )
        _, digest = hash_file(path)
        if digest != sha256:
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {folder} is corrupt: the SHA-256 of {name} is {digest}, "
                f"its manifest says {sha256}"
            )
    return manifest


# ---------------------------------------------------------------------- safe loading

_METADATA_MODULES = (
    "torch.distributed.checkpoint.metadata",
    "torch.distributed.checkpoint.filesystem",
    "torch.distributed.checkpoint.planner",
    "torch.distributed.checkpoint._extension",
)
_PATHS = {"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"}
_BUILTINS = {"set", "frozenset", "tuple", "list", "dict", "slice", "int", "float", "str"}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` index admitting DCP's metadata classes and plain data only."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            module in _METADATA_MODULES
            or (module == "builtins" and name in _BUILTINS)
            or (module == "collections" and name == "OrderedDict")
            or (
                module == "torch"
                and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype))
            )
            or (module == "torch.serialization" and name == "_get_layout")
            or (module == "pathlib" and name in _PATHS)
        )
        if not allowed or name.startswith("__"):
            raise pickle.UnpicklingError(
                f"the .metadata of a sharded checkpoint refers to {module}.{name}, which is not "
                "a class of torch.distributed.checkpoint's metadata"
            )
        return super().find_class(module, name)


class _SafeReader(FileSystemReader):
    """DCP's file reader with a ``.metadata`` that cannot run code when read."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = Path(self.path) / ".metadata"
        with open(path, "rb") as file:
            try:
                metadata = _MetadataUnpickler(file).load()
            except pickle.UnpicklingError as exc:
                raise _format.CheckpointRefusedError(
                    f"refused to load sharded checkpoint {self.path}: {exc}; nothing from it "
                    "was executed"
                ) from exc
        if not isinstance(metadata, Metadata):
            raise _format.CheckpointIntegrityError(
                f"sharded checkpoint {self.path} has a .metadata that is not DCP metadata"
            )
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _safe_object(value: io.BytesIO, where: str, folder: str) -> Any:
    try:
        return torch.load(value, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _format.CheckpointRefusedError(
            f"refused to load sharded checkpoint {folder}: {where} holds objects that "
            "torch.load(weights_only=True) does not allow, and unpickling them could run "
            f"arbitrary code; nothing from it was executed ({_format._first_line(exc)})"
        ) from exc


def _put(planner: DefaultLoadPlanner, read_item: ReadItem, loaded: Any) -> None:
    """What ``DefaultLoadPlanner.load_bytes`` does with the object, once loaded safely."""
    if planner.flatten_state_dict:
        set_element(planner.original_state_dict, planner.mappings[read_item.dest_index.fqn], loaded)
    else:
        planner.state_dict[read_item.dest_index.fqn] = loaded


class _SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's load planner with every non-tensor value loaded ``weights_only``."""

    folder = ""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        _put(self, read_item, _safe_object(value, read_item.dest_index.fqn, self.folder))


class _SafeEmptyPlanner(_EmptyStateDictLoadPlanner):
    """DCP's planner that rebuilds the whole state in one process, loading ``weights_only``."""

    folder = ""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        _put(self, read_item, _safe_object(value, read_item.dest_index.fqn, self.folder))


def dcp_error(exc: BaseException, what: str) -> CheckpointError:
    """A :class:`CheckpointError` for a DCP failure; a refusal inside it stays a refusal."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, Mapping):
        for failure in failures.values():
            if isinstance(failure, CheckpointError):
                return failure
        exc_text = "; ".join(
            f"rank {rank}: {type(failure).__name__}: {_format._first_line(failure)}"
            for rank, failure in sorted(failures.items())
        )
    else:
        exc_text = f"{type(exc).__name__}: {_format._first_line(exc)}"
    if isinstance(exc, CheckpointError):
        return exc
    return CheckpointError(f"{what}: {exc_text}")


def load_full(folder: Path) -> dict[str, Any]:
    """The whole state of a sharded checkpoint, gathered in this process as plain CPU tensors.

    The folder must have been verified; every object is loaded ``weights_only``.
    """
    _SafeReader(folder).read_metadata()  # refuses an index that would run code, before DCP
    state: dict[str, Any] = {}
    planner = _SafeEmptyPlanner()  # type: ignore[no-untyped-call]
    planner.folder = str(folder)
    try:
        with _quiet(Group(0, 1, None, False)):
            _load_state_dict(
                state, storage_reader=_SafeReader(folder), planner=planner, no_dist=True
            )
    except Exception as exc:
        raise dcp_error(exc, f"could not load sharded checkpoint {folder}") from exc
    return state


# ---------------------------------------------------------------------- collectives


@dataclasses.dataclass(frozen=True)
class Group:
    """The processes of a collective save or load, and this one's place among them."""

    rank: int
    world_size: int
    group: Any  # dist.ProcessGroup, or None without a running process group
    distributed: bool

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, group_src=0, group=self.group)
        return box[0]

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, by rank."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.group)
        return gathered


def group_of(process_group: Any) -> Group:
    """The :class:`Group` of ``process_group`` (the default group when ``None``)."""
    if dist.is_available() and dist.is_initialized():
        group: Any = process_group if process_group is not None else dist.group.WORLD
        return Group(dist.get_rank(group), dist.get_world_size(group), group, True)
    if process_group is not None:
        raise CheckpointError(
            f"process_group={process_group!r} was given, but no process group is running"
        )
    return Group(0, 1, None, False)


def dedicated_group(group: Group) -> Group:
    """A Gloo group of the same ranks, for the collectives of asynchronous saves.

    An asynchronous save runs collectives on a background thread while training runs its own on
    the main thread; on one group the two would interleave differently on different ranks.
    """
    if not group.distributed:
        return group
    ranks = dist.get_process_group_ranks(group.group)
    new: Any = dist.new_group(ranks=ranks, backend="gloo", use_local_synchronization=True)
    return Group(dist.get_rank(new), dist.get_world_size(new), new, True)


def int_keys(state: Mapping[str, Any]) -> list[list[str]]:
    """Where ``state`` has dicts with int keys (optimizer state), which DCP turns into str.

    Recorded in the manifest so that a sharded checkpoint read whole in one process gives the
    keys back as saved, the same dict a file checkpoint of the state would give.
    """
    found: list[list[str]] = []

    def visit(value: Any, path: list[str]) -> None:
        if isinstance(value, Mapping):
            if any(isinstance(key, int) and not isinstance(key, bool) for key in value):
                found.append(path)
            for key, item in value.items():
                visit(item, [*path, str(key)])
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                visit(item, [*path, str(index)])

    visit(state, [])
    return found


def restore_int_keys(state: dict[str, Any], paths: list[list[str]]) -> dict[str, Any]:
    """Turn the digit keys of the dicts at ``paths`` back into ints, in place."""
    for path in paths:
        node: Any = state
        for part in path:
            if isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
            if node is None:
                break
        if isinstance(node, dict):
            items = list(node.items())
            node.clear()
            for key, value in items:
                digits = isinstance(key, str) and key.lstrip("-").isdigit()
                node[int(key) if digits else key] = value
    return state


def check_state(state: Mapping[str, Any]) -> None:
    """Refuse a state whose non-tensor values ``torch.load(weights_only=True)`` would refuse."""
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"save_sharded: state must be a mapping of names to state dicts, got "
            f"{type(state).__name__}"
        )

    def strip(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return None  # DTensors and plain tensors alike: DCP writes them as tensors
        if isinstance(value, Mapping):
            return {key: strip(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [strip(item) for item in value]
        return value

    _snapshot.prepare({key: strip(value) for key, value in state.items()}, copy_to_cpu=False)


# ---------------------------------------------------------------------- the commit


def temporary_name(step: int, token: str) -> str:
    """The name of the folder a sharded save of ``step`` writes into before its commit."""
    return f".step-{step:08d}.{token}.tmp"


def hash_own_files(folder: Path, rank: int) -> dict[str, tuple[int, str]]:
    """Size and SHA-256 of the shard files rank ``rank`` wrote (DCP names them ``__R_*``)."""
    prefix = f"__{rank}_"
    return {
        entry.name: hash_file(Path(entry.path))
        for entry in os.scandir(folder)
        if entry.name.startswith(prefix)
    }


def seal(
    temporary: Path,
    final: Path,
    gathered: list[tuple[dict[str, tuple[int, str]], str | None]],
    **record: Any,
) -> None:
    """Rank 0's part of the commit: manifest, fsync, rename into place, fsync the parent.

    Raises:
        CheckpointError: a rank failed, or a step of the commit did.
    """
    files: dict[str, tuple[int, str]] = {}
    for rank, (hashed, error) in enumerate(gathered):
        if error is not None:
            raise CheckpointError(f"rank {rank} could not hash its shards: {error}")
        files.update(hashed)
    for entry in os.scandir(temporary):
        if entry.name not in files:
            files[entry.name] = hash_file(Path(entry.path))
    write_manifest(temporary, files, world_size=len(gathered), **record)
    _format.fsync_directory(temporary)
    aside: Path | None = None
    if os.path.lexists(final):  # saving a step again: a folder cannot be renamed over
        aside = final.with_name(temporary_name(record["step"], os.urandom(8).hex()))
        os.replace(final, aside)
    os.replace(temporary, final)
    _format.fsync_directory(final.parent)
    if aside is not None:
        remove_tree(aside)


def remove_tree(path: Path) -> None:
    """Delete a folder (or a file) and whatever is inside; missing is fine."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


@contextlib.contextmanager
def _quiet(group: Group) -> Iterator[None]:
    """Hush DCP's warning that one process without a process group saves or loads alone."""
    with warnings.catch_warnings():
        if not group.distributed:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _writer(folder: Path) -> FileSystemWriter:
    """DCP's writer into ``folder``: one file per rank, each fsynced, nothing overwritten."""
    return FileSystemWriter(folder, single_file_per_rank=True, sync_files=True, overwrite=False)


def write(state: Mapping[str, Any], folder: Path, group: Group) -> None:
    """Collective: every rank writes its shards into ``folder`` with ``dcp.save``."""
    try:
        with _quiet(group):
            save(
                dict(state),
                storage_writer=_writer(folder),
                process_group=group.group,
                no_dist=not group.distributed,
            )
    except Exception as exc:
        raise dcp_error(exc, f"could not write sharded checkpoint shards into {folder}") from exc


def _layout(value: Any) -> Any:
    """The structure of a state and the local shape and dtype of each tensor in it."""
    if isinstance(value, torch.Tensor):
        local = value.to_local() if hasattr(value, "to_local") else value
        return (type(value).__name__, tuple(local.shape), local.dtype, str(local.device))
    if isinstance(value, Mapping):
        return tuple((key, _layout(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(_layout(item) for item in value)
    return None


class ReusingStager(BlockingAsyncStager):
    """Stages a state for ``dcp.async_save`` into CPU buffers kept from the previous save.

    Copying into memory already mapped is several times faster than into fresh memory (no page
    faults), and the copy is all an asynchronous save blocks training for. The buffers (one CPU
    copy of this rank's state) are kept for the next save, and made anew when the state's
    layout changes. Only one asynchronous save may use them at a time: the store waits for the
    previous save before it stages the next.
    """

    def __init__(self) -> None:
        super().__init__(cache_staged_state_dict=True)
        self._cached_layout: Any = None

    def stage(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """A CPU copy of ``state_dict``, in the kept buffers when the layout is unchanged."""
        layout = _layout(state_dict)
        if self.state_dict_cache is None or layout != self._cached_layout:
            self.state_dict_cache = _create_cpu_state_dict(state_dict)
            self._cached_layout = layout
        copied: dict[str, Any] = _copy_state_dict(state_dict, self.state_dict_cache)
        return copied


def write_asynchronously(
    state: Mapping[str, Any], folder: Path, group: Group, stager: ReusingStager | None = None
) -> Any:
    """Stage ``state`` (a copy) and write it into ``folder`` in the background (``dcp.async_save``).

    Returns:
        The future of the write; its result raises what the write raised.
    """
    try:
        with _quiet(group):
            return async_save(
                dict(state),
                storage_writer=_writer(folder),
                async_stager=stager,
                process_group=group.group,
                no_dist=not group.distributed,
            )
    except Exception as exc:
        raise dcp_error(exc, f"could not stage a sharded checkpoint for {folder}") from exc


def load_into(folder: Path, state: MutableMapping[str, Any], group: Group) -> None:
    """Collective: fill ``state`` in place from the verified sharded checkpoint ``folder``."""
    _SafeReader(folder).read_metadata()  # refuses an index that would run code, before DCP
    planner = _SafeLoadPlanner()
    planner.folder = str(folder)
    try:
        with _quiet(group):
            load(
                state,
                storage_reader=_SafeReader(folder),
                planner=planner,
                process_group=group.group,
                no_dist=not group.distributed,
            )
    except Exception as exc:
        raise dcp_error(exc, f"could not load sharded checkpoint {folder}") from exc


def map_tensors(state: Any, map_location: Any) -> Any:
    """``state`` with its (CPU) tensors moved as ``map_location`` says (``torch.load``'s sense)."""
    if map_location is None:
        return state
    if isinstance(map_location, dict):
        target: Any = map_location.get("cpu", "cpu")
    elif callable(map_location):
        return _visit(state, lambda tensor: map_location(tensor, "cpu"))
    else:
        target = map_location
    device = torch.device(target)
    if device.type == "cpu":
        return state
    return _visit(state, lambda tensor: tensor.to(device))


def _visit(value: Any, change: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return change(value)
    if isinstance(value, dict):
        return {key: _visit(item, change) for key, item in value.items()}
    if isinstance(value, list):
        return [_visit(item, change) for item in value]
    if isinstance(value, tuple):
        return tuple(_visit(item, change) for item in value)
    return value
