"""The config guards resume: the run folder keeps the config a run was started with.

``fit`` of a trainer built from a config (:func:`~helios.trainer.from_config`, ``helios fit``)
saves the resolved config as ``run_dir/config.toml`` when the run starts. On resume the config
given now is compared key by key with the saved one: keys of ``SAFE_TO_CHANGE_ON_RESUME`` may
differ (train longer, log more often), keys named in ``allow_change`` too; any other difference
refuses the resume with the list of differences. An accepted change replaces ``config.toml`` and
is appended to ``run_dir/config-changes.jsonl`` with the step from which it applies.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from helios.core import CheckpointInfo, ConfigurationError, Model
from helios.trainer._config import (
    ABSENT,
    config_diff,
    config_key,
    config_sha256,
    read_config,
    to_toml,
)
from helios.trainer._settings import SAFE_TO_CHANGE_ON_RESUME, Settings

__all__ = ["CHANGES_FILE", "CONFIG_FILE", "apply_changes", "guard", "is_allowed", "write_config"]

CONFIG_FILE = "config.toml"
CHANGES_FILE = "config-changes.jsonl"


def is_allowed(key: str, allowed: Iterable[str]) -> bool:
    """Whether ``key`` is one of ``allowed`` or inside a table of it (``model.optimizer``)."""
    return any(key == name or key.startswith(name + ".") for name in allowed)


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as ``run_dir/config.toml`` atomically (a crash leaves the old one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / CONFIG_FILE
    text = f"# the resolved config of this run; sha256 {config_sha256(config)}\n" + to_toml(config)
    with tempfile.NamedTemporaryFile("w", dir=run_dir, suffix=".tmp", delete=False) as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(file.name, target)
    return target


def declared_safe(config: Mapping[str, Any], where: str = "") -> list[str]:
    """The keys the config's classes declare safe to change (``safe_to_change_on_resume``).

    A class whose arguments do not change what a step computes says so with a class attribute,
    ``safe_to_change_on_resume = ("workers",)``: a ``DataModule``'s loader workers, say (Helios'
    batches do not depend on their number).
    """
    from helios.trainer._config import RESERVED, target_of

    safe: list[str] = []
    for key, value in config.items():
        name = f"{where}.{key}" if where else key
        if not isinstance(value, Mapping):
            continue
        if any(reserved in value for reserved in RESERVED):
            declared = getattr(target_of(value, name), "safe_to_change_on_resume", ())
            safe.extend(f"{name}.{argument}" for argument in declared)
        safe.extend(declared_safe(value, name))
    return safe


def _is_writer(settings: Settings) -> bool:
    """Whether this process writes the run folder's config (global rank 0 of a launched job)."""
    if settings.distributed is not None:
        return settings.distributed.is_main_process
    return os.environ.get("RANK", "0") == "0"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) and value == "(absent)" else json.dumps(value)


def guard(settings: Settings, latest: Callable[[], CheckpointInfo | None]) -> None:
    """Save the config of a fresh run, or check the one of a resumed run against the saved one.

    Args:
        settings: the trainer's settings, with ``config``.
        latest: the checkpoint a resume would start from (``None``: the run starts fresh).

    Raises:
        ConfigurationError: the run resumes and its config differs from the saved one in a
            key that is neither safe to change nor allowed; the message lists every difference.
    """
    config = settings.config
    assert config is not None
    run_dir = settings.run_dir
    writes = _is_writer(settings)
    saved_file = run_dir / CONFIG_FILE
    start = latest() if settings.resume != "never" else None
    if start is None or not saved_file.is_file():
        if settings.resume == "never" and any(run_dir.glob("checkpoints/*")):
            return  # the trainer refuses this run itself; leave the folder as it is
        if writes:
            write_config(run_dir, config)
        return
    saved = read_config(saved_file)
    diff = config_diff(saved, config)
    if not diff:
        return
    allowed = (*SAFE_TO_CHANGE_ON_RESUME, *declared_safe(config), *settings.allow_change)
    refused = {key: change for key, change in diff.items() if not is_allowed(key, allowed)}
    if refused:
        lines = "\n".join(
            f"  {key}: {_shown(old)} -> {_shown(new)}"
            + ("" if key in refused else "  (safe to change)")
            for key, (old, new) in diff.items()
        )
        raise ConfigurationError(
            f"the config differs from the one {run_dir} was started with ({saved_file}):\n"
            f"{lines}\n"
            f"a resumed run keeps its config; to change {', '.join(refused)} anyway, pass "
            + " ".join(f"--allow-change {key}" for key in refused)
            + " (allow_change= in Python), or start a new run in another folder"
        )
    if not writes:
        return  # checked; global rank 0 records the change
    record = {
        "step": start.step,
        "epoch": start.epoch,
        "checkpoint": start.path.name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "changes": {key: {"old": old, "new": new} for key, (old, new) in diff.items()},
        "allowed_by": {
            key: "safe"
            if is_allowed(key, (*SAFE_TO_CHANGE_ON_RESUME, *declared_safe(config)))
            else "allow_change"
            for key in diff
        },
        "sha256": {"old": config_sha256(saved), "new": config_sha256(config)},
    }
    with (run_dir / CHANGES_FILE).open("a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())
    write_config(run_dir, config)


def _set_hyperparameter(optimizer: Any, model: Model, name: str, value: Any) -> None:
    for group in optimizer.param_groups:
        if name not in group:
            continue
        old = group.get("initial_lr", group[name]) if name == "lr" else group[name]
        if name == "lr" and isinstance(old, int | float) and old and isinstance(value, int | float):
            scale = value / old  # the schedule goes on as if it had started from the new lr
            group["lr"] = group["lr"] * scale
            if "initial_lr" in group:
                group["initial_lr"] = value
        else:
            group[name] = tuple(value) if isinstance(group[name], tuple) else value
    if name != "lr":
        return
    for scheduler in model.schedulers().values():
        base = getattr(scheduler, "base_lrs", None)
        if getattr(scheduler, "optimizer", None) is optimizer and isinstance(base, list):
            scheduler.base_lrs = [value for _ in base]


def apply_changes(
    model: Model, settings: Settings, written_with: dict[str, Any] | None, logger: logging.Logger
) -> None:
    """Give restored optimizers and schedulers the values of config changes accepted since.

    A checkpoint holds the optimizer's hyper-parameters, so a resumed run would go on with the
    old ones: for each key changed since the config the checkpoint was written with (which it
    holds), the optimizers and schedulers made from that table get the new value -- in every
    parameter group for an optimizer (``lr`` scales the scheduled rate, so a schedule goes on
    as if it had started from the new rate), as an attribute for a scheduler. Every rank works
    this out from the checkpoint alone, so all of them apply the same.
    """
    config = settings.config
    if config is None or written_with is None:
        return
    changes = {
        key: new for key, (_, new) in config_diff(written_with, config).items() if new != ABSENT
    }
    made = {**model.optimizers(), **model.schedulers()}
    for attribute, made_object in made.items():
        key = config_key(made_object)
        for changed, value in changes.items():
            table, _, name = changed.rpartition(".")
            if key is None or table != key:
                continue
            if hasattr(made_object, "param_groups"):
                _set_hyperparameter(made_object, model, name, value)
            elif hasattr(made_object, name):
                setattr(made_object, name, value)
            else:
                continue
            logger.info("config change applied on resume: %s.%s = %r", attribute, name, value)
