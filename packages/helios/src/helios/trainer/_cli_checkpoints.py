"""``helios checkpoints``: list a run's checkpoints, and extract plain weights from one.

    helios checkpoints RUN_DIR                        # every entry, its verdict, best and pick
    helios checkpoints extract CHECKPOINT -o FILE     # the networks' weights alone
    helios checkpoints consolidate FOLDER -o FILE     # a sharded checkpoint as one file

Errors a user can fix are :class:`CommandError` (one line, exit status 2, printed by
``helios.trainer._cli.main``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from helios.core import CheckpointInfo

__all__ = ["CommandError", "checkpoints", "consolidate", "extract"]

EXIT_FAILED = 1


class CommandError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


def _store(folder: Path, **settings: Any) -> Any:
    from helios.ckpt import DirectoryCheckpointStore

    return DirectoryCheckpointStore(folder, keep_last=None, **settings)


def _format_metrics(metrics: Any) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(dict(metrics).items())) or "-"


def _entry_line(entry: Any, best: Path | None) -> str:
    info = entry.info
    step = info.step if info is not None else entry.step
    epoch = info.epoch if info is not None else None
    metrics = _format_metrics(info.metrics) if info is not None and entry.verdict == "ok" else ""
    mark = "best" if best is not None and entry.path == best else ""
    return (
        f"  {'-' if step is None else step:>8} {'-' if epoch is None else epoch:>6} "
        f"{entry.size:>12,}  {entry.verdict:<19} {mark:<4} {entry.path.name:<24} {metrics}"
    ).rstrip()


def _monitor(store: Any, latest: CheckpointInfo | None) -> tuple[str | None, str]:
    """The metric the run ranks checkpoints by, as its newest good checkpoint records it."""
    from helios.trainer import _checkpoint

    if latest is None:
        return None, "min"
    try:
        record = _checkpoint.run_record(_checkpoint.read(store.load(latest.path), latest.path))
    except Exception:  # not a trainer checkpoint, or unreadable: no "best" to show
        return None, "min"
    return record.monitor, record.monitor_mode


def _best(folder: Path, store: Any, latest: CheckpointInfo | None) -> tuple[str, Path | None]:
    """A line saying which checkpoint is best by which metric, and that checkpoint's path."""
    monitor, mode = _monitor(store, latest)
    if monitor is None:
        return "best: none (the model has no monitor, or no checkpoint records it)", None
    ranked = _store(folder, best_metric=monitor, best_mode=mode)
    try:
        best = ranked.best()
    finally:
        ranked.close()
    if best is None:
        return f"best by {monitor} ({mode}): none (no checkpoint was taken at a validation)", None
    value = best.metrics[monitor]
    return f"best by {monitor} ({mode}): {best.path.name} ({monitor}={value:.6g})", best.path


def checkpoints(run_dir: Path) -> int:
    """Print every entry that looks like a checkpoint with its verdict, the best, the pick.

    Returns:
        0, or 1 when the newest checkpoint (by the step in its name) is damaged or refused.
    """
    if run_dir.is_dir() and (run_dir / "manifest.json").exists():
        folder, only = run_dir.parent, run_dir.name  # one sharded checkpoint
    elif run_dir.is_dir():
        folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
        only = None
    elif run_dir.exists() or run_dir.is_symlink():
        folder, only = run_dir.parent, run_dir.name  # one file
    else:
        raise CommandError(f"{str(run_dir)!r} does not exist: expected a run folder or a file")
    store = _store(folder)
    try:
        return _list(store, folder, only, run_dir)
    finally:
        store.close()


def _list(store: Any, folder: Path, only: str | None, given: Path) -> int:
    entries = store.inspect(load=True)
    if only is not None:
        entries = [entry for entry in entries if entry.path.name == only]
        if not entries:
            raise CommandError(
                f"{str(given)!r} is not named like a checkpoint (step-NNNNNNNN.pt, or the "
                "folder step-NNNNNNNN of a sharded one): expected a run folder or a checkpoint"
            )
    if not entries:
        print(f"no checkpoints in {folder}")
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latest = store.latest()
    best_line, best = _best(folder, store, latest) if only is None else ("", None)
    print(f"checkpoints in {folder}:")
    print(f"  {'step':>8} {'epoch':>6} {'size':>12}  {'status':<19} {'':<4} {'file':<24} metrics")
    for entry in entries:
        print(_entry_line(entry, best))
        if entry.reason and entry.verdict not in ("ok", "temporary"):
            print(f"           {entry.reason}")
    leftovers = [entry for entry in entries if entry.verdict == "temporary"]
    if leftovers:
        total = sum(entry.size for entry in leftovers)
        print(
            f"{len(leftovers)} temporary file(s) of interrupted saves ({total:,} bytes): the "
            "next fit removes them"
        )
    named = [entry for entry in entries if entry.step is not None]
    if only is None:
        print(best_line)
        pick = latest.path.name if latest else "none (no good checkpoint)"
        refused = latest is not None and any(
            e.path == latest.path and e.verdict == "REFUSED" for e in named
        )
        print(f"resume would pick: {pick}" + (" (REFUSED: fit stops there)" if refused else ""))
    if named and named[-1].verdict != "ok":
        newest = named[-1]
        print(
            f"helios checkpoints: the newest checkpoint, {newest.path.name}, is "
            f"{newest.verdict}: {newest.reason}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


def extract(checkpoint: Path, out: Path) -> int:
    """Write the networks' weights of ``checkpoint`` to ``out``, a plain weights file.

    The checkpoint is verified (size, SHA-256) and loaded weights-only; the file written opens
    with ``torch.load(out, weights_only=True)`` and :meth:`helios.core.Model.load_weights`, and
    records where it came from (file, step, epoch, SHA-256, Helios version).
    """
    from helios.core import write_weights
    from helios.trainer import _checkpoint

    if not checkpoint.is_file() and not (checkpoint / "manifest.json").is_file():
        raise CommandError(
            f"checkpoint {str(checkpoint)!r} does not exist; expected a file or the folder of a "
            "sharded checkpoint"
        )
    if out.exists() and out.samefile(checkpoint):
        raise CommandError(f"-o {str(out)!r} is the checkpoint itself; expected another file")
    store = _store(checkpoint.parent)
    try:
        listed = {info.path.name: info for info in store.list()}
        info = listed.get(checkpoint.name) or CheckpointInfo(path=checkpoint, step=-1, epoch=-1)
        saved = _checkpoint.read(store.load(checkpoint, map_location="cpu"), checkpoint)
    finally:
        store.close()
    networks = _checkpoint.model_state(saved, checkpoint).get("networks", {})
    source = _checkpoint.provenance(info, saved)
    written = write_weights(networks, out, source=source)
    print(
        f"wrote the weights of {len(networks)} network(s) ({', '.join(sorted(networks))}) of "
        f"{checkpoint.name} (step {source['helios.checkpoint.step']}) to {written} "
        f"({written.stat().st_size:,} bytes)"
    )
    return 0


def consolidate(folder: Path, out: Path) -> int:
    """Write the sharded checkpoint ``folder`` as one ordinary checkpoint file ``out``."""
    from helios.ckpt import consolidate as write_one_file
    from helios.core import ConfigurationError

    if not (folder / "manifest.json").is_file():
        raise CommandError(
            f"{str(folder)!r} is not a sharded checkpoint: expected a folder such as "
            "RUN_DIR/checkpoints/step-00000400 holding a manifest.json"
        )
    try:
        written = write_one_file(folder, out)
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from exc
    print(
        f"wrote the sharded checkpoint {folder} as one checkpoint file {written} "
        f"({written.stat().st_size:,} bytes)"
    )
    return 0
