"""The performance monitor: throughput, step time, data-loader wait, MFU, memory, slow ranks.

Everything is measured with host clocks at the loop's existing boundaries, and read at logging
points only: no step waits for the device. A logging window is the steps since the previous
logging point; a window never spans a validation (its time is left out, and logged apart as
``time/validation``) nor a restart (a resumed run logs no timing for a window that began before
it started). Under DDP one all-reduce of a few numbers per rank at each logging point gives the
figures of every rank, so the slowest and fastest rank are known and a rank that stays slower
than the others is named in a warning. A rank's speed is its own work per step -- the wait for
its loader and ``train_step`` -- because its wall time per step is not: DDP's gradient exchange
makes every rank wait for the slowest, so all ranks take the same wall time.

MFU (model FLOPs utilisation) needs the FLOPs of a batch -- measured once, on the first batch
of the ``fit``, with ``torch.utils.flop_counter.FlopCounterMode`` (forward and backward), or
given -- and the device's peak FLOP/s: given, or looked up for common GPUs by name and precision
(never guessed for a CPU).
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch

from helios.core import ConfigurationError, Model
from helios.trainer._callbacks import Callback, TrainerState
from helios.trainer._wiring import LOGGER_NAME

__all__ = ["PEAK_TFLOPS", "PerformanceMonitor", "peak_flops_of"]

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # Dense peak TFLOP/s per device from the vendors' data sheets: "16" for bf16/fp16 on tensor
    # cores, "32" for fp32 (no TF32). Matched against torch.cuda.get_device_name, longest first.
    "H200": {"16": 989.0, "32": 67.0},
    "H100": {"16": 989.0, "32": 67.0},
    "A100": {"16": 312.0, "32": 19.5},
    "L40S": {"16": 362.0, "32": 91.6},
    "L4": {"16": 121.0, "32": 30.3},
    "A10": {"16": 125.0, "32": 31.2},
    "V100": {"16": 125.0, "32": 15.7},
    "RTX 4090": {"16": 165.2, "32": 82.6},
}
"""Dense peak TFLOP/s per device of common GPUs, by part of their ``torch.cuda`` name.

``"16"`` is the bf16/fp16 figure (``precision="bf16"`` or ``"16-mixed"``), ``"32"`` the fp32 one.
Give :class:`PerformanceMonitor` ``peak_flops`` for a device that is not listed, or to override.
"""
_MB = 2**20
# per rank: window seconds, data wait, batches, samples, peak RSS, CUDA allocated, CUDA reserved,
# seconds in train_step
_FIELDS = 8


def peak_flops_of(device: torch.device, precision: str) -> float | None:
    """The peak FLOP/s of ``device`` at ``precision`` from :data:`PEAK_TFLOPS`, if listed."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    column = "32" if precision == "32" else "16"
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key][column] * 1e12
    return None


def _peak_rss_mb() -> float:
    """This process's peak resident memory (0 where the platform cannot say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def _positive_number(name: str, value: object, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(
            f"PerformanceMonitor: {name} must be a positive number"
            + (" or None" if allow_none else "")
            + f", got {value!r}"
        )


class PerformanceMonitor(Callback):
    """Throughput, timing, MFU and memory at every logging point; the slowest rank under DDP.

    Built in (``Trainer(track_performance=False)`` drops it); pass your own in ``callbacks`` to
    configure it. What it adds to each training record (see the monitoring guide):

    - ``throughput/samples_per_sec`` and ``throughput/batches_per_sec``: all processes together,
      and ``..._per_rank``: the mean of one process;
    - ``throughput/tokens_per_sec`` (and ``..._per_rank``): when ``train_step`` returns a
      ``tokens`` metric, the tokens in its batch;
    - ``throughput/flops_per_sec`` (one process) when the FLOPs are known, and
      ``throughput/mfu``, that over the peak FLOP/s, when both are known;
    - ``time/step``: seconds per optimizer step; ``time/data_wait``: seconds per step spent
      waiting for the loader; ``time/data_wait_share``: that as a share of the step;
    - under DDP, ``time/rank_work_slowest``, ``time/rank_work_fastest`` and
      ``time/slowest_rank``: a process's own work per step (loader wait and ``train_step``);
    - ``memory/peak_rss_mb``: peak resident memory of a process (the largest); on CUDA,
      ``memory/peak_allocated_mb`` and ``memory/peak_reserved_mb`` in the window.

    Args:
        peak_flops: the peak FLOP/s of one device at the run's precision; ``None`` looks a GPU
            up in a small table of common ones (H200, H100, A100, L40S, L4, A10, V100, RTX 4090;
            dense bf16/fp16 or fp32 figures); a CPU has no MFU unless given.
        flops_per_batch: FLOPs of one training batch on one process (forward and backward);
            ``None`` measures them on the first batch when a peak is known.
        tokens_metric: the name of the metric ``train_step`` returns with the tokens of a batch.
        slow_rank_factor: a process whose own work per step exceeds this many times the median
            of the others' is slow.
        slow_rank_patience: after this many logging windows in a row in which the same process
            was slow, a warning names it.

    Raises:
        ConfigurationError: a value that is not positive (or not >= 1 for the factor).
    """

    def __init__(
        self,
        *,
        peak_flops: float | None = None,
        flops_per_batch: float | None = None,
        tokens_metric: str = "tokens",
        slow_rank_factor: float = 1.5,
        slow_rank_patience: int = 3,
    ) -> None:
        _positive_number("peak_flops", peak_flops)
        _positive_number("flops_per_batch", flops_per_batch)
        _positive_number("slow_rank_factor", slow_rank_factor, allow_none=False)
        if slow_rank_factor < 1:
            raise ConfigurationError(
                f"PerformanceMonitor: slow_rank_factor must be >= 1, got {slow_rank_factor!r}"
            )
        patience = slow_rank_patience
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigurationError(
                f"PerformanceMonitor: slow_rank_patience must be a positive int, got {patience!r}"
            )
        self.peak_flops = peak_flops
        self.flops_per_batch = flops_per_batch
        self.tokens_metric = tokens_metric
        self.slow_rank_factor = float(slow_rank_factor)
        self.slow_rank_patience = patience
        self._peak: float | None = None
        self._flops: float | None = None
        self._counter: Any = None
        self._measure = False
        self._spans_restart = False
        self._slow: tuple[int, int] = (-1, 0)  # (rank, windows in a row)
        self._clock: float | None = None
        self._elapsed = 0.0
        self._start: tuple[int, int, int, float, float] = (0, 0, 0, 0.0, 0.0)

    # ---- the window -------------------------------------------------------------------------

    def _start_window(self, state: TrainerState) -> None:
        training = state.training
        self._start = (
            training.step,
            training.batches,
            state.samples,
            state.data_wait,
            state.forward_time,
        )
        self._elapsed = 0.0
        self._clock = time.perf_counter()

    def on_training_start(self, state: TrainerState, model: Model) -> None:
        """Start the first window; find the peak FLOP/s; reset CUDA's memory peaks."""
        device = state.distributed.device if state.distributed is not None else model.device
        self._device = device
        self._peak = self.peak_flops or peak_flops_of(device, state.settings.precision)
        self._flops = self.flops_per_batch
        self._measure = self._flops is None and self._peak is not None
        # A window that began before this process started has no time: leave it out.
        self._spans_restart = state.training.step % state.settings.log_every != 0
        if device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(device)
        self._start_window(state)

    def on_training_batch_start(self, state: TrainerState, model: Model) -> None:
        """Count the FLOPs of the first batch, once."""
        if self._measure:
            from torch.utils.flop_counter import FlopCounterMode

            self._measure = False
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        """Keep the FLOPs counted over the first batch."""
        if self._counter is not None:
            self._stop_counting()

    def _stop_counting(self) -> None:
        counter, self._counter = self._counter, None
        counter.__exit__(None, None, None)
        self._flops = float(counter.get_total_flops()) or None

    def on_validation_start(self, state: TrainerState, model: Model) -> None:
        """Stop the window's clock: validation is not training time."""
        if self._clock is not None:
            self._elapsed += time.perf_counter() - self._clock
            self._clock = None

    def on_validation_end(self, state: TrainerState, model: Model) -> None:
        """Restart the window's clock."""
        self._clock = time.perf_counter()

    def on_fit_exit(self, state: TrainerState, model: Model) -> None:
        """Leave the FLOP counter if the first batch failed inside it."""
        if self._counter is not None:
            self._stop_counting()

    # ---- at a logging point -----------------------------------------------------------------

    def _local(self, state: TrainerState) -> list[float]:
        """This process's figures of the window just ended (and start the next window)."""
        now = time.perf_counter()
        elapsed = self._elapsed + (now - self._clock if self._clock is not None else 0.0)
        _, batches, samples, wait, forward = self._start
        training = state.training
        figures = [
            elapsed,
            state.data_wait - wait,
            float(training.batches - batches),
            float(state.samples - samples),
            _peak_rss_mb(),
            0.0,
            0.0,
            state.forward_time - forward,
        ]
        device = self._device
        if device.type == "cuda" and torch.cuda.is_available():
            figures[5] = torch.cuda.max_memory_allocated(device) / _MB
            figures[6] = torch.cuda.max_memory_reserved(device) / _MB
            torch.cuda.reset_peak_memory_stats(device)
        self._start_window(state)
        return figures

    def _gather(self, state: TrainerState, local: list[float]) -> list[list[float]]:
        """Every process's figures: one all-reduce of a few numbers per rank."""
        context = state.distributed
        if context is None or not context.is_distributed:
            return [local]
        table = torch.zeros(context.world_size, _FIELDS, dtype=torch.float64)
        table[context.rank] = torch.tensor(local, dtype=torch.float64)
        summed = context.all_reduce_sum(table.to(context.device)).cpu()
        rows: list[list[float]] = summed.tolist()
        return rows

    def collect_metrics(self, state: TrainerState, model: Model) -> Mapping[str, float]:
        """The window's figures (every process takes part in one all-reduce under DDP)."""
        steps = state.training.step - self._start[0]
        spans_restart, self._spans_restart = self._spans_restart, False
        local = self._local(state)
        if spans_restart or steps <= 0:
            return {}
        rows = self._gather(state, local)
        metrics = self._throughput(state, rows)
        metrics.update(self._timing(rows, steps))
        metrics["memory/peak_rss_mb"] = max(row[4] for row in rows)
        if self._device.type == "cuda":
            metrics["memory/peak_allocated_mb"] = max(row[5] for row in rows)
            metrics["memory/peak_reserved_mb"] = max(row[6] for row in rows)
        if len(rows) > 1:
            work = [(row[1] + row[7]) / steps for row in rows]
            slowest = max(range(len(work)), key=work.__getitem__)
            metrics["time/rank_work_slowest"] = work[slowest]
            metrics["time/rank_work_fastest"] = min(work)
            metrics["time/slowest_rank"] = slowest
            self._watch_slow_ranks(state, work)
        return metrics

    def _throughput(self, state: TrainerState, rows: list[list[float]]) -> dict[str, float]:
        world = len(rows)
        batch_rates = [row[2] / row[0] for row in rows]
        sample_rates = [row[3] / row[0] for row in rows]
        metrics = {
            "throughput/batches_per_sec": sum(batch_rates),
            "throughput/batches_per_sec_per_rank": sum(batch_rates) / world,
        }
        if any(sample_rates):
            metrics["throughput/samples_per_sec"] = sum(sample_rates)
            metrics["throughput/samples_per_sec_per_rank"] = sum(sample_rates) / world
        tokens = state.logged.get(f"train/{self.tokens_metric}")
        if tokens is not None and math.isfinite(tokens):
            metrics["throughput/tokens_per_sec"] = tokens * sum(batch_rates)
            metrics["throughput/tokens_per_sec_per_rank"] = tokens * sum(batch_rates) / world
        if self._flops is not None:
            flops_per_sec = self._flops * sum(batch_rates) / world
            metrics["throughput/flops_per_sec"] = flops_per_sec
            if self._peak is not None:
                metrics["throughput/mfu"] = flops_per_sec / self._peak
        return metrics

    @staticmethod
    def _timing(rows: list[list[float]], steps: int) -> dict[str, float]:
        world = len(rows)
        step_times = [row[0] / steps for row in rows]
        metrics = {
            "time/step": sum(step_times) / world,
            "time/data_wait": sum(row[1] for row in rows) / world / steps,
            "time/data_wait_share": sum(row[1] / row[0] for row in rows) / world,
        }
        return metrics

    def _watch_slow_ranks(self, state: TrainerState, work: list[float]) -> None:
        """Warn (rank 0) when one rank was slow in ``slow_rank_patience`` windows in a row."""
        slowest = max(range(len(work)), key=work.__getitem__)
        others = statistics.median(t for rank, t in enumerate(work) if rank != slowest)
        slow = others > 0 and work[slowest] > self.slow_rank_factor * others
        rank, streak = self._slow
        streak = (streak + 1 if rank == slowest else 1) if slow else 0
        self._slow = (slowest if slow else -1, streak)
        if streak and streak % self.slow_rank_patience == 0 and state.is_main_process:
            logging.getLogger(LOGGER_NAME).warning(
                "rank %d is slower than the others in %d logging windows in a row: its own work "
                "(loader wait and train_step) takes %.4f s per step against %.4f s (the median "
                "of the other ranks), more than %.2g times; the others wait for it at every "
                "gradient exchange: look at its data loading, its device or its node",
                slowest,
                streak,
                work[slowest],
                others,
                self.slow_rank_factor,
            )
