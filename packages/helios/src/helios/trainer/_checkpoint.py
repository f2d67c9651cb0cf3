"""The layout of a trainer checkpoint: named ``Stateful`` parts, the one place that knows them.

A checkpoint of ``fit`` is a dict ``{"format": FORMAT, part: part.state_dict(), ...}``:

============== ===========================================================================
part           what it holds
============== ===========================================================================
model          networks, optimizers, schedulers, scalers and extra state (unwrapped)
training_state ``TrainingState``: epoch, step, batches, validation cycles
data           the data source's position (the sampler's)
rng            every rank's RNG state now, as a list by rank
epoch_start_rng every rank's RNG state at its epoch's start (for a resume inside the epoch)
scaler         the trainer-owned ``GradScaler``'s state (``None`` when the model owns it)
train_means    running sums of the training metrics not logged yet
callbacks      the stateful callbacks' states, by ``state_key``
trainer        :class:`RunRecord`: how the run was configured and where it ended
============== ===========================================================================

Everything that reads a checkpoint -- ``fit`` resuming, ``test``, ``export``, the result after
spawned processes, ``helios verify-resume`` -- goes through :func:`read`, which upgrades older
formats step by step (``_MIGRATIONS``), so an old run resumes without the user converting it.

A sharded checkpoint (``strategy="fsdp"`` with a :class:`~helios.core.ShardedCheckpointStore`)
holds the same parts, written by every rank at once (:func:`assemble_sharded`): the networks
and optimizers as DTensor shards, optimizer state keyed by parameter name (what
``get_optimizer_state_dict`` gives and DCP reshards), and ``rng`` / ``epoch_start_rng`` keyed
by rank (``{"rank3": ...}``) so each rank's is kept. :func:`read` turns what one process loads of
it back into the layout above (RNG lists by rank, optimizer state keyed by index), so every
reader sees one layout, and a sharded checkpoint resumes under DDP or on another world size.

Why not ``helios.ckpt.register_migration``: that registry versions the file container of
``DirectoryCheckpointStore`` (manifest, hashes), for every payload, and runs only in that store;
this layout is the trainer's payload and must upgrade whatever store holds it (a user's too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from helios.core import (
    CheckpointError,
    CheckpointInfo,
    CheckpointStore,
    ResumeError,
    Stateful,
    TrainingState,
)

__all__ = [
    "COMPARED",
    "FORMAT",
    "PARTS",
    "RunRecord",
    "assemble",
    "assemble_sharded",
    "find_checkpoint",
    "load",
    "model_state",
    "provenance",
    "read",
    "restore",
    "training_state",
]

_NAME = "helios-trainer"
VERSION = 2
FORMAT = f"{_NAME}/{VERSION}"
PARTS = (
    "model",
    "training_state",
    "data",
    "rng",
    "epoch_start_rng",
    "scaler",
    "train_means",
    "callbacks",
    "trainer",
)
COMPARED = ("model", "training_state", "data", "trainer", "rng", "callbacks")
"""The parts two runs that agree must hold equal (``helios verify-resume`` compares them)."""


@dataclasses.dataclass
class RunRecord:
    """How the run was configured and where it ended (the ``trainer`` part).

    Attributes:
        unit: what ``total`` counts; a resume with another unit is refused.
        total: the planned length.
        accumulate: batches per optimizer step; a resume with another value is refused.
        world_size: processes that wrote the checkpoint.
        finished: the end-of-run work was done.
        stopped_by_model: ``Model.should_training_stop`` ended the run.
        last_valid_step: the step of the last validation, if any.
        monitor: ``Model.monitor``, the metric "best" ranks checkpoints by (``None``: none).
        monitor_mode: ``Model.monitor_mode``, whether smaller or larger is better.
        config_sha256: the SHA-256 of the resolved config the run was built from (``None``:
            not built from a config); see :func:`helios.trainer.from_config`.
        config: that resolved config (plain data, without ``trainer.run_dir``), so a resume
            knows what changed since.
        hparams: the run's hyper-parameters (the trainer's settings, ``Trainer(hparams=)`` and
            ``Model.hparams``), as plain values; a resume compares its own with them.
        skipped_steps: optimizer steps skipped for a non-finite loss (``non_finite="skip"``).
    """

    unit: str = "epoch"
    total: int = 0
    accumulate: int = 1
    world_size: int = 1
    finished: bool = False
    stopped_by_model: bool = False
    last_valid_step: int | None = None
    monitor: str | None = None
    monitor_mode: str = "min"
    config_sha256: str | None = None
    config: dict[str, Any] | None = None
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped_steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the fields; one an older checkpoint lacks keeps its default."""
        for field in dataclasses.fields(self):
            if field.name in state:
                setattr(self, field.name, state[field.name])


def _from_1(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Format 1 to 2: the early-stop count becomes the ``EarlyStopping`` callback's state."""
    upgraded = dict(checkpoint)
    count = int(checkpoint["training_state"].get("early_stop_count", 0))
    upgraded["callbacks"] = {"EarlyStopping": {"count": count}}
    return upgraded


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_1}


def _version(checkpoint: Mapping[str, Any], path: object) -> int:
    text = checkpoint.get("format")
    name, _, number = str(text).partition("/")
    if name != _NAME or not number.isdigit():
        raise ResumeError(
            f"{path} is not a checkpoint of helios.trainer (format {text!r}, expected {FORMAT!r})"
        )
    version = int(number)
    if version > VERSION:
        raise ResumeError(
            f"{path} has format {text!r}, newer than the {FORMAT!r} this helios reads: "
            "upgrade helios to resume it"
        )
    return version


def read(checkpoint: Mapping[str, Any], path: object) -> dict[str, Any]:
    """A loaded checkpoint in today's layout (older formats upgraded step by step).

    Raises:
        ResumeError: it is not a trainer checkpoint, or of a newer format.
    """
    if "format" not in checkpoint:
        model_state(checkpoint, path)  # a file of something else: say what it lacks
    state = _unsharded(dict(checkpoint))
    for version in range(_version(checkpoint, path), VERSION):
        state = _MIGRATIONS[version](state)
    state["format"] = FORMAT
    return state


def assemble(parts: Mapping[str, Stateful]) -> dict[str, Any]:
    """The checkpoint of ``parts``, which must be exactly :data:`PARTS`."""
    if set(parts) != set(PARTS):
        raise ValueError(f"checkpoint parts {sorted(parts)} are not {sorted(PARTS)}")
    return {"format": FORMAT, **{name: parts[name].state_dict() for name in PARTS}}


def assemble_sharded(parts: Mapping[str, Stateful], rank: int) -> dict[str, Any]:
    """This rank's share of a sharded checkpoint of ``parts`` (:data:`PARTS`).

    ``rng`` and ``epoch_start_rng`` must hold this rank's state alone; they are keyed by rank.
    """
    state = assemble(parts)
    for name in _PER_RANK:
        state[name] = {f"rank{rank}": state[name]}
    hollow: list[list[Any]] = []
    _find_hollow(state, [], hollow)
    state[_HOLLOW] = {f"rank{rank}": json.dumps(hollow)}
    return state


_PER_RANK = ("rng", "epoch_start_rng")
_HOLLOW = "hollow"
"""Where a sharded state holds empty dicts and lists and ``None``, which DCP does not keep."""


def _find_hollow(value: Any, path: list[Any], found: list[list[Any]]) -> None:
    if isinstance(value, Mapping):
        if not value:
            found.append([path, "dict"])
        for key, item in value.items():
            if isinstance(key, str | int):
                _find_hollow(item, [*path, key], found)
    elif isinstance(value, list | tuple):
        if not value:
            found.append([path, "list"])
        for index, item in enumerate(value):
            _find_hollow(item, [*path, index], found)
    elif value is None:
        found.append([path, "none"])


def _fill_hollow(state: dict[str, Any], hollow: Mapping[str, Any]) -> None:
    """Put back the empty containers and ``None`` values :func:`assemble_sharded` recorded."""
    empty: dict[str, Callable[[], Any]] = {"dict": dict, "list": list, "none": lambda: None}
    for record in hollow.values():
        for path, kind in json.loads(record):
            node: Any = state
            for key in path[:-1]:
                if isinstance(node, dict):
                    node = node.setdefault(key, {})
                elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                    node = node[key]
                else:
                    break
            else:
                if path and isinstance(node, dict) and path[-1] not in node:
                    node[path[-1]] = empty[kind]()


def _by_index(optimizer: Mapping[str, Any]) -> Mapping[str, Any]:
    """An optimizer state keyed by parameter name (DCP's) keyed by index, as ``state_dict()``."""
    groups = optimizer.get("param_groups")
    if not isinstance(groups, list):
        return optimizer
    names = [name for group in groups for name in group.get("params", [])]
    if not names or not all(isinstance(name, str) for name in names):
        return optimizer
    index = {name: i for i, name in enumerate(names)}
    slots = optimizer.get("state", {})
    return {
        "state": {index[name]: slots[name] for name in names if name in slots},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]} for group in groups
        ],
    }


def _unsharded(state: dict[str, Any]) -> dict[str, Any]:
    """A sharded checkpoint loaded whole, in the layout of a file (a file's is unchanged)."""
    hollow = state.pop(_HOLLOW, None)
    if isinstance(hollow, Mapping):
        _fill_hollow(state, hollow)
    for name in _PER_RANK:
        value = state.get(name)
        if isinstance(value, Mapping) and value and all(str(k).startswith("rank") for k in value):
            state[name] = [value[f"rank{rank}"] for rank in range(len(value))]
    model = state.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("optimizers"), Mapping):
        optimizers = {name: _by_index(value) for name, value in model["optimizers"].items()}
        state["model"] = {**model, "optimizers": optimizers}
    return state


def restore(checkpoint: Mapping[str, Any], parts: Mapping[str, Stateful]) -> None:
    """Load each of ``parts`` from a checkpoint :func:`read` returned, in the order given."""
    for name, part in parts.items():
        part.load_state_dict(checkpoint[name])


def model_state(checkpoint: Mapping[str, Any], path: object) -> dict[str, Any]:
    """The model part.

    Raises:
        CheckpointError: there is none (not a checkpoint of the trainer).
    """
    found = checkpoint.get("model")
    if not isinstance(found, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds no 'model' state (keys: {sorted(checkpoint)}); "
            "expected a checkpoint written by helios.trainer"
        )
    return dict(found)


def training_state(checkpoint: Mapping[str, Any]) -> TrainingState:
    """The training-state part, as a :class:`~helios.core.TrainingState`."""
    state = TrainingState()
    state.load_state_dict(checkpoint["training_state"])
    return state


def run_record(checkpoint: Mapping[str, Any]) -> RunRecord:
    """The ``trainer`` part."""
    record = RunRecord()
    record.load_state_dict(checkpoint["trainer"])
    return record


def provenance(info: CheckpointInfo, checkpoint: Mapping[str, Any]) -> dict[str, str]:
    """Where weights come from, as strings for a file's metadata (ONNX, weights files).

    The checkpoint's file name, step, epoch and SHA-256 (the store's, or hashed here for a file
    the store did not list), and the version of Helios that reads it.
    """
    state = training_state(checkpoint) if "training_state" in checkpoint else None
    step = info.step if info.step >= 0 or state is None else state.step
    epoch = info.epoch if info.epoch >= 0 or state is None else state.epoch
    digest = info.sha256
    if not digest and info.path.is_file():
        with info.path.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    try:
        helios_version = importlib.metadata.version("helios")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        helios_version = "0.0.0"
    return {
        "helios.checkpoint": info.path.name,
        "helios.checkpoint.step": str(step),
        "helios.checkpoint.epoch": str(epoch),
        "helios.checkpoint.sha256": digest,
        "helios.version": helios_version,
    }


def find_checkpoint(
    store: CheckpointStore, checkpoint: str | os.PathLike[str], run_dir: Path
) -> CheckpointInfo:
    """Resolve ``"best"`` (falling back to the last), ``"last"`` or a path to a checkpoint."""
    which = os.fspath(checkpoint)
    info: CheckpointInfo | None
    if which == "best":
        info = store.best() or store.latest()
    elif which == "last":
        info = store.latest()
    else:
        path = Path(which)
        info = next((i for i in store.list() if i.path == path), None)
        if info is None:
            info = CheckpointInfo(path=path, step=-1, epoch=-1)
    if info is None:
        raise CheckpointError(f"no checkpoint in {run_dir / 'checkpoints'}")
    return info


def load(
    store: CheckpointStore, which: str | os.PathLike[str] | CheckpointInfo, map_location: Any
) -> dict[str, Any]:
    """Load the checkpoint ``which`` (a path or an info) from ``store`` and :func:`read` it.

    Raises:
        CheckpointError: the store cannot load it.
        ResumeError: it is not a trainer checkpoint, or of a newer format.
    """
    path = which.path if isinstance(which, CheckpointInfo) else which
    return read(store.load(which, map_location=map_location), path)
