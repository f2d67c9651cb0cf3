"""Where a ``fit`` starts: from a checkpoint (which one, agreed by every rank) or fresh.

Rank 0 decides and every rank learns the decision, refusals included, so none is left waiting.
Resuming restores every part of the checkpoint (see :mod:`helios.trainer._checkpoint`), then
this rank's RNG state, so the next batch is the one an uninterrupted run would have taken.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from helios.core import (
    CheckpointError,
    CheckpointStore,
    ConfigurationError,
    ResumeError,
    restore_rng_state,
    seed_everything,
)
from helios.trainer import _checkpoint, _run_config, _wiring
from helios.trainer._loop import FitLoop

__all__ = ["resume_or_start"]


def _checkpoint_entries(store: CheckpointStore) -> list[Any]:
    """The entries of the default store's folder named like checkpoints (any verdict)."""
    entries = _wiring.inspect_checkpoints(store) or []
    return [entry for entry in entries if entry.step is not None]


def _nothing_usable(store: CheckpointStore, folder: Path) -> tuple[str, str] | None:
    """Why ``resume='auto'`` must not start over when checkpoints exist but none loads."""
    found = _checkpoint_entries(store)
    if not found:
        return None
    what = "; ".join(f"{entry.path.name}: {entry.verdict} ({entry.reason})" for entry in found)
    return (
        "CheckpointError",
        f"resume='auto' found {len(found)} checkpoint file(s) in {folder} but none usable, "
        f"and will not start over on top of them: {what}. Nothing was changed. To start "
        f"fresh, move {folder} away (or use another run_dir); to resume from a checkpoint "
        "kept elsewhere, pass resume=<its path>",
    )


def _choose_checkpoint(loop: FitLoop) -> str | None:
    """The checkpoint to resume from, decided on rank 0 and agreed by every rank.

    A refusal (checkpoints present but none usable, or any with ``resume='never'``) is raised
    on every rank, so none is left waiting.
    """
    settings, store, context = loop.settings, loop.store, loop.context
    choice: str | None = None
    refusal: tuple[str, str] | None = None
    if context.is_main_process and store is not None:
        if settings.resume == "auto":
            info = store.latest()
            choice = None if info is None else os.fspath(info.path)
            if info is None:
                refusal = _nothing_usable(store, settings.checkpoint_dir)
        elif settings.resume == "never":
            if store.list() or _checkpoint_entries(store):
                refusal = (
                    "ConfigurationError",
                    f"resume='never', but {settings.run_dir} already holds checkpoints; "
                    "use another run_dir, delete them, or resume='auto'",
                )
        else:
            choice = settings.resume
    if context.is_distributed:
        choice, refusal = context.broadcast_object((choice, refusal), src=0)
    if refusal is not None:
        kind, message = refusal
        raise (ConfigurationError if kind == "ConfigurationError" else CheckpointError)(message)
    return choice


def resume_or_start(loop: FitLoop) -> bool:
    """Restore the run's checkpoint into ``loop``, or start fresh.

    Returns:
        Whether the checkpoint is of a run that had finished (the end-of-run work included).
    """
    path = _choose_checkpoint(loop)
    if path is None:
        _start_fresh(loop)
        return False
    assert loop.store is not None
    try:
        checkpoint = _checkpoint.load(loop.store, path, map_location=loop.device)
    except CheckpointError as exc:
        if loop.settings.resume != "auto":
            raise
        raise CheckpointError(
            f"{exc}. resume='auto' stops here rather than go back to an older checkpoint "
            f"unasked: move {Path(path).name} out of {Path(path).parent} to resume from the "
            "one before it, or pass resume=<the checkpoint to resume from>"
        ) from exc
    if loop.settings.resume not in ("auto", "never") and loop.context.is_main_process:
        _set_aside_newer(loop, int(checkpoint["training_state"]["step"]), Path(path))
    return _restore(loop, checkpoint, Path(path))


def _set_aside_newer(loop: FitLoop, step: int, path: Path) -> None:
    """Going back to an older checkpoint: move the newer ones (and their logs) aside.

    Otherwise a later ``resume='auto'`` would jump back to the abandoned line, and retention
    would delete the new line's checkpoints in favour of the old one's.
    """
    assert loop.store is not None
    moved = _wiring.set_aside_checkpoints(loop.store, step)
    if moved is None:
        return
    aside, files = moved
    metrics = loop.settings.run_dir / "metrics.jsonl"
    if metrics.is_file():
        shutil.copy2(metrics, aside / metrics.name)
    loop.logger.warning(
        "resuming from %s (step %d), older than the %d checkpoint(s) after it: moved them "
        "to %s (with a copy of metrics.jsonl); nothing was deleted: %s",
        path,
        step,
        len(files),
        aside,
        ", ".join(file.name for file in files),
    )


def _start_fresh(loop: FitLoop) -> None:
    settings, context = loop.settings, loop.context
    loop.data.set_epoch(0)
    if context.is_distributed:
        # Identical weights came from the shared seed; from here each rank draws its own
        # stream (dropout masks differ between ranks, as they would on separate data).
        seed_everything((settings.seed + context.rank) % 2**32)
    if context.is_main_process:
        loop.metric_logger.resume(0)
        loop.metric_logger.log_hyperparameters(
            {
                "unit": settings.unit,
                "total": settings.total,
                "accumulate": settings.accumulate,
                "precision": settings.precision,
                "clip_grad_norm": settings.clip_grad_norm or 0.0,
                "seed": settings.seed,
                "world_size": context.world_size,
                "model": type(loop.model).__name__,
            }
        )
    loop.logger.info(
        "training %s in %s: %d %s(s), %d process(es) on %s",
        type(loop.model).__name__,
        settings.run_dir,
        settings.total,
        settings.unit,
        context.world_size,
        loop.device,
    )


def _restore(loop: FitLoop, checkpoint: dict[str, Any], path: Path) -> bool:
    settings, context, state = loop.settings, loop.context, loop.state
    saved = _checkpoint.run_record(checkpoint)
    if saved.unit != settings.unit or saved.accumulate != settings.accumulate:
        raise ResumeError(
            f"{path} was written with unit={saved.unit!r}, accumulate={saved.accumulate}; "
            f"this trainer has unit={settings.unit!r}, accumulate={settings.accumulate}: "
            "positions would not line up"
        )
    parts = loop.parts([], [])
    for name in ("rng", "epoch_start_rng", "trainer"):  # this rank's share is taken below
        del parts[name]
    try:
        parts.pop("model").load_state_dict(checkpoint["model"])
    except ResumeError as error:  # the networks (or optimizers...) of setup() changed
        raise ResumeError(
            f"{error}\nThe model no longer fits the checkpoints of {settings.run_dir}: use a new "
            f"run_dir, or move the checkpoints out of {settings.checkpoint_dir} and pass "
            'resume="never" to start over in this one (resume="never" refuses a run_dir that '
            "still holds checkpoints; it deletes nothing)"
        ) from error
    _checkpoint.restore(checkpoint, parts)
    _run_config.apply_changes(loop.model, settings, saved.config, loop.logger)
    loop.record.stopped_by_model = saved.stopped_by_model
    loop.record.last_valid_step = saved.last_valid_step
    if context.is_main_process:
        loop.metric_logger.resume(state.step)
    loop.last_checkpoint_step = state.step
    loop.last_checkpoint = path
    rng_states = checkpoint["rng"]
    if saved.world_size == context.world_size and context.rank < len(rng_states):
        restore_rng_state(rng_states[context.rank])
        epoch_start = checkpoint.get("epoch_start_rng")
        if epoch_start is not None and context.rank < len(epoch_start):
            loop.epoch_start_rng = epoch_start[context.rank]
    else:
        loop.logger.warning(
            "resuming %d process(es) from a checkpoint of %d: RNG streams restart from the "
            "seed, so this run is not bitwise identical to an uninterrupted one",
            context.world_size,
            saved.world_size,
        )
        seed_everything((settings.seed + context.rank + state.step) % 2**32)
    loop.logger.info(
        "resumed from %s at step %d (epoch %d, batch %d of the epoch)",
        path,
        state.step,
        state.epoch,
        state.batch_in_epoch,
    )
    return bool(saved.finished)
