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
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from helios.core import CheckpointInfo, ConfigurationError
from helios.trainer._config import config_diff, config_sha256, read_config, to_toml
from helios.trainer._settings import SAFE_TO_CHANGE_ON_RESUME, Settings

__all__ = ["CHANGES_FILE", "CONFIG_FILE", "guard", "is_allowed", "write_config"]

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
    saved_file = run_dir / CONFIG_FILE
    start = latest() if settings.resume != "never" else None
    if start is None or not saved_file.is_file():
        if settings.resume == "never" and any(run_dir.glob("checkpoints/*")):
            return  # the trainer refuses this run itself; leave the folder as it is
        write_config(run_dir, config)
        return
    saved = read_config(saved_file)
    diff = config_diff(saved, config)
    if not diff:
        return
    allowed = (*SAFE_TO_CHANGE_ON_RESUME, *settings.allow_change)
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
    record = {
        "step": start.step,
        "epoch": start.epoch,
        "checkpoint": start.path.name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "changes": {key: {"old": old, "new": new} for key, (old, new) in diff.items()},
        "allowed_by": {
            key: "allow_change" if is_allowed(key, settings.allow_change) else "safe"
            for key in diff
        },
        "sha256": {"old": config_sha256(saved), "new": config_sha256(config)},
    }
    with (run_dir / CHANGES_FILE).open("a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())
    write_config(run_dir, config)
