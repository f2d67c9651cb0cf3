"""What a run tells the person watching it: a line per validation, a summary at the end.

Written on global rank 0 through the trainer's logger, so each line reaches the console and
``logs/rank-0.log``. Epochs are counted from 1 here, as the progress bar counts them
(``epoch 2/5`` is the second of five); ``metrics.jsonl`` keeps the 0-based index of
:class:`~helios.core.TrainingState`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from helios.core import TrainingState

if TYPE_CHECKING:
    from helios.trainer._loop import FitLoop

__all__ = ["epoch_of_step", "summary", "validation"]


def epoch_of_step(state: TrainingState) -> int:
    """The 0-based epoch the current step belongs to (the one just ended, at an epoch's end)."""
    if state.batch_in_epoch == 0 and state.epoch > 0:
        return state.epoch - 1
    return state.epoch


def _epoch_text(loop: FitLoop) -> str:
    """``epoch 2/5`` (``unit="epoch"``) or ``epoch 2``: as the progress bar counts."""
    shown = epoch_of_step(loop.state) + 1
    if loop.settings.unit == "epoch":
        return f"epoch {shown}/{loop.settings.total}"
    return f"epoch {shown}"


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()))


def validation(loop: FitLoop, cycle: int, seconds: float) -> None:
    """One line after a validation: its metrics, and whether the monitored one improved."""
    model, state = loop.model, loop.state
    line = (
        f"validation {cycle + 1} at step {state.step} ({_epoch_text(loop)}, {seconds:.2f} s): "
        f"{_metrics_text(model.valid_metrics) or 'no metrics'}"
    )
    monitor, best = model.monitor, model.best_monitored
    if monitor is not None and monitor in model.valid_metrics and best is not None:
        if state.early_stop_count == 0:
            line += f"; {monitor} improved: best so far {best:.4g}"
        else:
            line += (
                f"; {monitor} did not improve on the best {best:.4g} "
                f"({state.early_stop_count} validation(s) in a row)"
            )
    loop.logger.info("%s", line)


def summary(loop: FitLoop, seconds: float) -> None:
    """The end of ``fit`` in this process: steps, time, best and last checkpoint, the logs."""
    state, settings = loop.state, loop.settings
    how = "stopped by a signal" if loop.interrupted else "finished"
    lines = [
        f"training {how} at step {state.step} ({_epoch_text(loop)}) after {seconds:.1f} s "
        f"in this process"
    ]
    best = loop.store.best() if loop.store is not None else None
    if best is not None and loop.model.monitor is not None:
        value = best.metrics.get(loop.model.monitor)
        shown = f"{loop.model.monitor}={value:.4g}" if value is not None else "no metric"
        lines.append(f"best checkpoint: {best.path} (step {best.step}, {shown})")
    lines.append(f"last checkpoint: {loop.last_checkpoint}")
    if loop.record.skipped_steps:
        lines.append(f"steps skipped for a non-finite loss: {loop.record.skipped_steps}")
    lines.append(f"logs: {settings.run_dir / 'logs'}")
    if settings.metric_logger is None:
        written = ["metrics.jsonl"] + (["tensorboard/"] if settings.tensorboard_on else [])
        lines.append(f"metrics: {', '.join(str(settings.run_dir / w) for w in written)}")
    loop.logger.info("%s", "\n  ".join(lines))
