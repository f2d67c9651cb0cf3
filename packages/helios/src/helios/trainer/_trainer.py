"""``Trainer``: the training, validation and test loops, with exact resume from any step.

The trainer is typed against the protocols of ``helios.core`` only. The concrete checkpoint
store, metric loggers and process group come from :mod:`helios.trainer._wiring` unless the user
passes objects of their own.

How exact resume works here (see DESIGN.md, "Exact resume — how"): a checkpoint is written only
at an optimizer-step boundary and holds the model (networks, optimizers, schedulers, scalers),
``TrainingState``, the data source's position, every rank's RNG state, the running sums of the
metrics not yet logged, and the trainer's own scaler. Resuming restores all of it and lets the
loggers drop what they wrote after the checkpoint; the next batch is then the one the
uninterrupted run would have taken, with the same random state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence, Sized
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast

import torch

from helios.core import (
    CheckpointError,
    CheckpointInfo,
    CheckpointStore,
    ConfigurationError,
    DataSource,
    DistributedContext,
    MetricLogger,
    Model,
    ResumeError,
    TrainingState,
    capture_rng_state,
    restore_rng_state,
    seed_everything,
    set_deterministic,
)
from helios.trainer import _lock, _wiring
from helios.trainer._signals import RESUMABLE_EXIT_CODE, ForwardSignals, StopSignals

__all__ = ["FitResult", "Trainer"]

_FORMAT = "helios-trainer/1"
_NO_CONTEXT = contextlib.nullcontext()
_PRECISIONS = ("32", "bf16", "16-mixed")
Devices = Literal["auto", "cpu"] | int | Sequence[int]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """How a call to :meth:`Trainer.fit` ended.

    Attributes:
        state: the training state at the end.
        complete: training reached its end (``total``, early stopping, or
            ``should_training_stop``); running ``fit`` again does nothing.
        interrupted: a stop signal ended training early; running ``fit`` again resumes.
        resumed_from: the checkpoint training resumed from, if any.
        checkpoint: the last checkpoint written, if any.
        steps_trained: optimizer steps taken by this call (0 for a run already complete).
    """

    state: TrainingState
    complete: bool
    interrupted: bool
    resumed_from: Path | None = None
    checkpoint: Path | None = None
    steps_trained: int = 0


def _positive(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive int" + (" or None" if allow_none else "")
        raise ConfigurationError(f"{name} must be {expected}, got {value!r}")


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: _to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # named tuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class _Means:
    """Running sums of metrics, kept on the device so no step waits for the host."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, metrics: Mapping[str, torch.Tensor | float]) -> None:
        sums = self.sums
        for name, raw in metrics.items():
            value = raw.detach() if isinstance(raw, torch.Tensor) else raw
            total = sums.get(name)
            if total is None:
                sums[name] = torch.as_tensor(value, device=self.device).to(torch.float32, copy=True)
            else:
                total.add_(value)
        self.count += 1

    def means(self) -> dict[str, torch.Tensor]:
        return {name: total / max(self.count, 1) for name, total in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.count = {}, 0

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.count = int(state["count"])


def _batch_size(batch: Any) -> int:
    """The length of the first tensor in a (nested) batch: its number of samples (1 if none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        for item in batch:
            if isinstance(item, torch.Tensor | list | tuple | Mapping):
                return _batch_size(item)
    return 1


def _evaluate(
    loader: Any,
    step: Callable[[Any, int], Mapping[str, torch.Tensor | float] | None],
    on_batch_start: Callable[[int], None],
    on_batch_end: Callable[[int], None],
    *,
    context: DistributedContext,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> dict[str, float]:
    """Run an evaluation loop; the metrics ``step`` returns, averaged over every sample.

    Each batch's metrics are weighted by its number of samples, and sums and counts are added up
    over the processes (whose shards may differ by a batch), so a mean metric such as accuracy
    is the exact mean over the whole dataset. Nothing synchronises per batch.
    """
    device = context.device
    sums: dict[str, torch.Tensor] = {}
    samples = 0
    with torch.no_grad():
        for index, batch in enumerate(loader):
            on_batch_start(index)
            size = _batch_size(batch)
            with autocast():
                output = step(_to_device(batch, device), index)
            for name, value in (output or {}).items():
                weighted = torch.as_tensor(value, device=device).detach().float() * size
                sums[name] = sums[name] + weighted if name in sums else weighted
            samples += size
            on_batch_end(index)
    names = sorted(set().union(*context.all_gather_object(sorted(sums))))
    for name, total in sums.items():
        if total.numel() != 1:
            raise ConfigurationError(
                f"metric {name!r} must be a number or a one-element tensor, got a tensor of "
                f"shape {tuple(total.shape)}"
            )
    zero = torch.zeros((), device=device)
    local = [sums.get(name, zero).double().reshape(()) for name in names]
    local.append(torch.tensor(float(samples), dtype=torch.float64, device=device))
    *totals, count = context.all_reduce_sum(torch.stack(local)).tolist()  # one all-reduce
    return {name: total / count for name, total in zip(names, totals, strict=True)} if count else {}


def _refuse_loss(loss: torch.Tensor) -> None:
    """Say what is wrong with a loss automatic optimisation cannot backpropagate."""
    if loss.ndim != 0:
        raise ConfigurationError(
            f"train_step returned a loss of shape {tuple(loss.shape)}; expected a scalar tensor "
            "(reduce it, e.g. with .mean())"
        )
    raise ConfigurationError(
        "train_step returned a loss that does not require grad (detached, or computed under "
        "torch.no_grad()); expected the loss computed from the networks' outputs"
    )


def _split_output(output: Any, *, automatic: bool) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """The loss to optimise and the metrics to log from what ``train_step`` returned."""
    if isinstance(output, torch.Tensor):
        return output, {"loss": output}
    if isinstance(output, Mapping):
        metrics = dict(output)
        loss = metrics.get("loss")
        if automatic and not isinstance(loss, torch.Tensor):
            raise ConfigurationError(
                "train_step returned a dict without a tensor under 'loss' "
                f"(keys: {sorted(metrics)}); return the loss to optimise, or set "
                "automatic_optimization = False"
            )
        return cast("torch.Tensor | None", loss), metrics
    if output is None and not automatic:
        return None, {}
    raise ConfigurationError(
        f"train_step returned {type(output).__name__}; expected a loss tensor or a dict holding "
        "'loss'" + ("" if automatic else " (or None for a model that optimises itself)")
    )


class Trainer:
    """Runs a :class:`~helios.core.Model` over a :class:`~helios.core.DataSource`.

    Example:
        >>> trainer = Trainer(run_dir="runs/digits", unit="iteration", total=2000,
        ...                   valid_every=200, checkpoint_every=100, seed=7)
        >>> trainer.fit(Classifier(), Digits())  # doctest: +SKIP
        >>> trainer.test(Classifier(), Digits())  # doctest: +SKIP

    Args:
        run_dir: folder of the run: ``checkpoints/``, ``logs/``, ``tensorboard/``,
            ``metrics.jsonl`` and ``onnx/`` go here. Running ``fit`` again with the same folder
            resumes.
        unit: what ``total``, ``valid_every`` and ``checkpoint_every`` count: ``"epoch"`` or
            ``"iteration"`` (optimizer steps).
        total: how many epochs or optimizer steps to train.
        valid_every: validate every this many units; ``None``: at the end of every epoch.
            Training always ends with a validation when there is validation data.
        checkpoint_every: write a checkpoint every this many units; ``None``: at the end of
            every epoch. A checkpoint is always written at the end of training and on a stop
            signal.
        log_every: log the running means of the training metrics every this many steps.
        accumulate: batches whose gradients are summed into one optimizer step (DDP skips the
            gradient all-reduce on all but the last). The last window of an epoch may be
            shorter; the loss is averaged over the batches the window really holds.
        precision: ``"32"``, ``"bf16"`` (bfloat16 autocast) or ``"16-mixed"`` (float16 autocast
            with a ``GradScaler``, whose state is checkpointed).
        clip_grad_norm: clip the gradient norm of every network to this value (after
            unscaling); ``None`` does not clip.
        early_stop_patience: stop after this many validations in a row without improvement
            (as :meth:`Model.have_metrics_improved` says); ``None`` never stops early.
        seed: seeds every RNG at the start of a fresh run, and the data order.
        deterministic: use deterministic kernels only (see
            :func:`helios.core.set_deterministic`).
        devices: ``"auto"`` (every visible GPU, one process each, else the CPU), ``"cpu"``, a
            number of processes (GPUs when CUDA is available, else CPU processes with Gloo),
            or a list of GPU ids.
        backend: process-group backend, ``"auto"`` (NCCL with CUDA, Gloo on CPU), ``"nccl"``
            or ``"gloo"``.
        tensorboard: write TensorBoard event files besides ``metrics.jsonl``.
        progress: show progress bars; ``None`` shows them when the output is a terminal.
        resume: ``"auto"`` resumes from the newest good checkpoint in ``run_dir`` (or starts
            fresh without one), ``"never"`` starts fresh and refuses a ``run_dir`` that holds
            checkpoints, or the path of a checkpoint to resume from.
        keep_checkpoints: how many of the newest checkpoints to keep (``None``: all).
        keep_best: how many of the best checkpoints by ``Model.monitor`` to keep as well;
            ``None``: one when the model has a ``monitor``, else none.
        async_checkpoints: write checkpoints from a background thread.
        exit_on_signal: after a stop signal and its checkpoint, leave the process with exit
            status :data:`~helios.trainer.RESUMABLE_EXIT_CODE` (75) so a job scheduler can
            requeue; ``False`` returns a :class:`FitResult` with ``interrupted=True`` instead.
        timeout: how long a collective may wait for a rank before the job fails.
        checkpoint_store: a :class:`~helios.core.CheckpointStore` to use instead of the
            default folder under ``run_dir``.
        metric_logger: a :class:`~helios.core.MetricLogger` to use instead of the default
            TensorBoard + ``metrics.jsonl`` loggers. It is called on every rank.
        distributed: a :class:`~helios.core.DistributedContext` to use instead of detecting
            one (no processes are spawned then).

    Raises:
        ConfigurationError: an argument has a value the trainer cannot work with.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        unit: Literal["epoch", "iteration"] = "epoch",
        total: int,
        valid_every: int | None = None,
        checkpoint_every: int | None = None,
        log_every: int = 50,
        accumulate: int = 1,
        precision: Literal["32", "bf16", "16-mixed"] = "32",
        clip_grad_norm: float | None = None,
        early_stop_patience: int | None = None,
        seed: int = 0,
        deterministic: bool = False,
        devices: Devices = "auto",
        backend: Literal["auto", "nccl", "gloo"] = "auto",
        tensorboard: bool = True,
        progress: bool | None = None,
        resume: str | os.PathLike[str] = "auto",
        keep_checkpoints: int | None = 3,
        keep_best: int | None = None,
        async_checkpoints: bool = False,
        exit_on_signal: bool = True,
        timeout: timedelta = timedelta(minutes=30),
        checkpoint_store: CheckpointStore | None = None,
        metric_logger: MetricLogger | None = None,
        distributed: DistributedContext | None = None,
    ) -> None:
        """Validate and keep the settings; nothing starts until :meth:`fit` or :meth:`test`."""
        if not isinstance(run_dir, str | os.PathLike) or not os.fspath(run_dir):
            raise ConfigurationError(
                f"run_dir must be the path of a folder (a str or os.PathLike), got {run_dir!r}"
            )
        if unit not in ("epoch", "iteration"):
            raise ConfigurationError(f"unit must be 'epoch' or 'iteration', got {unit!r}")
        _positive("total", total)
        _positive("valid_every", valid_every, allow_none=True)
        _positive("checkpoint_every", checkpoint_every, allow_none=True)
        _positive("log_every", log_every)
        _positive("accumulate", accumulate)
        _positive("early_stop_patience", early_stop_patience, allow_none=True)
        _positive("keep_checkpoints", keep_checkpoints, allow_none=True)
        if keep_best is not None and (isinstance(keep_best, bool) or keep_best < 0):
            raise ConfigurationError(f"keep_best must be >= 0 or None, got {keep_best!r}")
        if precision not in _PRECISIONS:
            raise ConfigurationError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
        if clip_grad_norm is not None and (
            isinstance(clip_grad_norm, bool)
            or not isinstance(clip_grad_norm, int | float)
            or not clip_grad_norm > 0
        ):
            raise ConfigurationError(
                f"clip_grad_norm must be a positive number or None, got {clip_grad_norm!r}"
            )
        if backend not in ("auto", "nccl", "gloo"):
            raise ConfigurationError(f"backend must be 'auto', 'nccl' or 'gloo', got {backend!r}")
        self._check_devices(devices)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigurationError(f"seed must be an int in [0, 2**32), got {seed!r}")
        resume_text = os.fspath(resume)
        if resume_text not in ("auto", "never") and not Path(resume_text).is_file():
            raise ConfigurationError(
                f"resume must be 'auto', 'never' or the path of a checkpoint file; "
                f"{resume_text!r} is not a file"
            )
        if metric_logger is not None and not isinstance(metric_logger, MetricLogger):
            raise ConfigurationError("metric_logger does not implement helios.core.MetricLogger")
        if checkpoint_store is not None and not isinstance(checkpoint_store, CheckpointStore):
            raise ConfigurationError(
                "checkpoint_store does not implement helios.core.CheckpointStore"
            )
        if distributed is not None and not isinstance(distributed, DistributedContext):
            raise ConfigurationError(
                "distributed does not implement helios.core.DistributedContext"
            )
        self.run_dir = Path(run_dir)
        self.unit = unit
        self.total = total
        self.valid_every = valid_every
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.accumulate = accumulate
        self.precision = precision
        self.clip_grad_norm = clip_grad_norm
        self.early_stop_patience = early_stop_patience
        self.seed = seed
        self.deterministic = deterministic
        self.devices = devices
        self.backend = backend
        self.tensorboard = tensorboard
        self.progress = progress
        self.resume = resume_text
        self.keep_checkpoints = keep_checkpoints
        self.keep_best = keep_best
        self.async_checkpoints = async_checkpoints
        self.exit_on_signal = exit_on_signal
        self.timeout = timeout
        self.checkpoint_store = checkpoint_store
        self.metric_logger = metric_logger
        self.distributed = distributed

    # ---- settings -------------------------------------------------------------------------

    @staticmethod
    def _check_devices(devices: object) -> None:
        if devices in ("auto", "cpu"):
            return
        if isinstance(devices, int) and not isinstance(devices, bool):
            if devices < 1:
                raise ConfigurationError(f"devices must be at least 1, got {devices}")
            return
        if (
            isinstance(devices, Sequence)
            and not isinstance(devices, str)
            and devices
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
            and len(set(devices)) == len(devices)
        ):
            return
        raise ConfigurationError(
            "devices must be 'auto', 'cpu', a number of processes or a list of distinct GPU "
            f"ids, got {devices!r}"
        )

    def _process_count(self) -> int:
        """How many processes :meth:`fit` starts on this machine."""
        if self.distributed is not None or _wiring.launched_externally():
            return 1
        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if self.devices == "cpu":
            return 1
        if self.devices == "auto":
            return max(cuda, 1)
        if isinstance(self.devices, int):
            if cuda and self.devices > cuda:
                raise ConfigurationError(
                    f"devices={self.devices} asks for more GPUs than the {cuda} visible"
                )
            return self.devices
        ids = list(self.devices)
        if not cuda:
            raise ConfigurationError(f"devices={ids} names GPUs, but CUDA is not available")
        if max(ids) >= cuda:
            raise ConfigurationError(f"devices={ids} names a GPU id >= {cuda} (visible GPUs)")
        return len(ids)

    def _device_kind(self) -> str | None:
        if self.devices == "cpu" or not torch.cuda.is_available():
            return "cpu"
        return None

    def _prepare_gpu_ids(self) -> None:
        """Make the chosen GPUs the visible ones, so rank r uses the r-th of them."""
        if isinstance(self.devices, Sequence) and not isinstance(self.devices, str):
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in self.devices)

    # ---- public API -----------------------------------------------------------------------

    def fit(self, model: Model, datamodule: DataSource) -> FitResult:
        """Train ``model`` on ``datamodule``, resuming from ``run_dir`` when it can.

        With several devices this process spawns one process per device and waits for them;
        ``model`` is then loaded with the final checkpoint's state.

        Returns:
            How training ended.

        Raises:
            SystemExit: with status 75 after a stop signal, when ``exit_on_signal`` is set.
        """
        self._check_model(model, datamodule)
        nprocs = self._process_count()
        chosen_gpus = isinstance(self.devices, Sequence) and not isinstance(self.devices, str)
        # Named GPUs are made the visible ones in fresh processes, so even one id is spawned.
        launched = self.distributed is not None or _wiring.launched_externally()
        if nprocs > 1 or (chosen_gpus and not launched):
            self._prepare_gpu_ids()
            # This process holds the run folder for the ranks it spawns (they take no lock).
            with _lock.lock_run_folder(self.run_dir, "fit"):
                start = self._latest(model)
                datamodule.prepare_data()
                with ForwardSignals():
                    _wiring.spawn_processes(
                        _fit_entry, nprocs, (self, model, datamodule), self.backend
                    )
                result = self._result_after_spawn(model, start)
        else:
            result = self._run_here(model, datamodule, prepare=True)
        if result.interrupted and self.exit_on_signal:
            raise SystemExit(RESUMABLE_EXIT_CODE)
        return result

    def test(
        self,
        model: Model,
        datamodule: DataSource,
        checkpoint: Literal["best", "last"] | str | os.PathLike[str] = "best",
    ) -> dict[str, float]:
        """Evaluate ``model`` on the test data with the weights of a checkpoint of this run.

        Args:
            model: a fresh model (its ``setup`` is called here).
            datamodule: the data; its test loader is used.
            checkpoint: ``"best"`` (by ``Model.monitor``; the last one when there is no best),
                ``"last"``, or a checkpoint path.

        Returns:
            The test metrics, averaged over batches and processes (also in
            ``model.test_metrics``).

        Raises:
            CheckpointError: there is no checkpoint to test.
        """
        self._check_model(model, datamodule)
        context = self.distributed or _wiring.build_context(
            self.backend, self.timeout, self._device_kind()
        )
        try:
            with _lock.hold_run_folder(self.run_dir, "test", context):
                logger = _wiring.start_logging(self.run_dir, context)
                try:
                    return _TestRun(self, model, datamodule, context, logger).run(checkpoint)
                except BaseException:
                    logger.exception("testing failed on rank %d", context.rank)
                    raise
                finally:
                    _wiring.stop_logging()
        finally:
            if self.distributed is None:
                context.close()

    def export(
        self,
        model: Model,
        checkpoint: Literal["best", "last"] | str | os.PathLike[str] = "best",
        path: str | os.PathLike[str] | None = None,
        *,
        opset: int | None = None,
    ) -> _wiring.ExportReport:
        """Export the network ``model.export_target()`` names to ONNX, with a checkpoint's weights.

        The file is checked with ``onnx.checker`` and run in onnxruntime at batch sizes other
        than the example's; the outputs must match PyTorch's.

        Args:
            model: a fresh model (its ``setup`` is called here).
            checkpoint: ``"best"``, ``"last"`` or a checkpoint path, as for :meth:`test`.
            path: where to write the ONNX file; default ``run_dir/onnx/<Model>.onnx``.
            opset: the ONNX opset; ``None`` lets the exporter choose.

        Returns:
            The parity report (errors, opset, file size, time taken).

        Raises:
            ConfigurationError: the model names nothing to export.
        """
        self._check_model(model, None)
        # A checkpoint on read-only storage exports (to a writable --out) without the lock.
        with _lock.lock_run_folder(self.run_dir, "export", writable=path is None):
            return self._export_locked(model, checkpoint, path, opset)

    def _export_locked(
        self,
        model: Model,
        checkpoint: str | os.PathLike[str],
        path: str | os.PathLike[str] | None,
        opset: int | None,
    ) -> _wiring.ExportReport:
        model.setup()
        store = self._store(model)
        try:
            info = _find_checkpoint(store, checkpoint, self.run_dir)
            saved = store.load(info.path, map_location="cpu")
        finally:
            store.close()
        if not isinstance(saved.get("model"), Mapping):
            raise CheckpointError(
                f"checkpoint {info.path} holds no 'model' state (keys: {sorted(saved)}); "
                "expected a checkpoint written by helios.trainer"
            )
        model.load_state_dict(saved["model"])
        target = model.export_target()
        if target is None:
            raise ConfigurationError(
                f"{type(model).__name__}.export_target() returns None: override it to name the "
                "network to export and an example input"
            )
        default = self.run_dir / "onnx" / f"{type(model).__name__}.onnx"
        out = Path(path) if path is not None else default
        return _wiring.export_target(target, out, opset=opset)

    # ---- internals ------------------------------------------------------------------------

    @staticmethod
    def _check_model(model: object, datamodule: object) -> None:
        for name, given in (("model", model), ("datamodule", datamodule)):
            if isinstance(given, type):
                raise ConfigurationError(
                    f"{name} must be an instance, got the class {given.__name__}; expected "
                    f"{given.__name__}() (with its arguments)"
                )
        if not isinstance(model, Model):
            raise ConfigurationError(
                f"model must be a helios.core.Model, got {type(model).__name__}"
            )
        if datamodule is not None and not isinstance(datamodule, DataSource):
            raise ConfigurationError(
                f"datamodule must implement helios.core.DataSource, got {type(datamodule).__name__}"
            )

    def _store(self, model: Model) -> CheckpointStore:
        if self.checkpoint_store is not None:
            return self.checkpoint_store
        keep_best = self.keep_best
        if keep_best is None:
            keep_best = 1 if model.monitor is not None else 0
        if keep_best and model.monitor is None:
            raise ConfigurationError(
                f"keep_best={keep_best} needs {type(model).__name__}.monitor to name a metric"
            )
        return _wiring.build_checkpoint_store(
            self.run_dir / "checkpoints",
            keep_last=self.keep_checkpoints,
            keep_best=keep_best,
            best_metric=model.monitor,
            best_mode=model.monitor_mode,
            async_save=self.async_checkpoints,
        )

    def _run_here(
        self, model: Model, datamodule: DataSource, *, prepare: bool, lock: bool = True
    ) -> FitResult:
        context = self.distributed or _wiring.build_context(
            self.backend, self.timeout, self._device_kind()
        )
        try:
            with _lock.hold_run_folder(self.run_dir, "fit", context, take=lock):
                logger = _wiring.start_logging(self.run_dir, context)
                try:
                    with StopSignals() as signals:
                        run = _FitRun(self, model, datamodule, context, logger, signals)
                        return run.run(prepare)
                except BaseException:
                    logger.exception(
                        "training failed on rank %d (node %d)", context.rank, context.node_rank
                    )
                    raise
                finally:
                    _wiring.stop_logging()
        finally:
            if self.distributed is None:
                context.close()

    def _latest(self, model: Model) -> CheckpointInfo | None:
        store = self._store(model)
        try:
            return store.latest()
        finally:
            store.close()

    def _result_after_spawn(self, model: Model, start: CheckpointInfo | None) -> FitResult:
        store = self._store(model)
        try:
            info = store.latest()
            if info is None:
                raise CheckpointError(f"training processes left no checkpoint in {self.run_dir}")
            checkpoint = store.load(info, map_location="cpu")
        finally:
            store.close()
        model.setup()
        model.load_state_dict(checkpoint["model"])
        state = TrainingState()
        state.load_state_dict(checkpoint["training_state"])
        finished = bool(checkpoint["trainer"]["finished"])
        return FitResult(
            state=state,
            complete=finished,
            interrupted=not finished,
            resumed_from=start.path if start is not None else None,
            checkpoint=info.path,
            steps_trained=state.step - (start.step if start is not None else 0),
        )


def _find_checkpoint(
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


def _fit_entry(trainer: Trainer, model: Model, datamodule: DataSource) -> None:
    """What each spawned process runs (module level, so it pickles); the parent holds the lock."""
    trainer._run_here(model, datamodule, prepare=False, lock=False)


class _FitRun:
    """One call of :meth:`Trainer.fit` in one process: set-up, the loop, clean-up."""

    def __init__(
        self,
        trainer: Trainer,
        model: Model,
        data: DataSource,
        context: DistributedContext,
        logger: logging.Logger,
        signals: StopSignals,
    ) -> None:
        self.trainer = trainer
        self.model = model
        self.data = data
        self.context = context
        self.logger = logger
        self.signals = signals
        self.device = context.device
        self.state = TrainingState()
        self.train_means = _Means(self.device)
        self.last_checkpoint_step: int | None = None
        self.last_checkpoint: Path | None = None
        self.last_valid_step: int | None = None
        self.epoch_start_rng: dict[str, Any] | None = None
        self.finished = False
        self.finished_before = False
        self.stopped_by_model = False
        self.interrupted = False
        self.resumed_from: Path | None = None
        self.start_step = 0
        automatic = type(model).automatic_optimization
        if not automatic and trainer.accumulate != 1:
            raise ConfigurationError(
                "accumulate must be 1 for a model that optimises itself "
                "(automatic_optimization = False)"
            )
        if not automatic and trainer.clip_grad_norm is not None:
            raise ConfigurationError(
                "clip_grad_norm is applied by automatic optimisation only; a model with "
                "automatic_optimization = False clips in its own train_step"
            )
        self.automatic = automatic

    # ---- set-up ---------------------------------------------------------------------------

    def run(self, prepare: bool) -> FitResult:
        trainer, context, model = self.trainer, self.context, self.model
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
        if prepare:
            if context.is_local_main_process:
                self.data.prepare_data()
            context.barrier()
        if trainer.deterministic:
            set_deterministic(True)
        seed_everything(trainer.seed)
        self.data.configure(rank=context.rank, world_size=context.world_size, seed=trainer.seed)
        self.data.setup()
        model.setup()
        model.to(self.device)
        self.scaler = self._scaler()
        self.store = self._store_on_main()
        self.metric_logger = trainer.metric_logger or _wiring.build_metric_logger(
            trainer.run_dir, tensorboard=trainer.tensorboard, context=context
        )
        try:
            self._resume_or_start()
            # A run that reached its end but was stopped before the end-of-run work (final
            # validation, on_training_end, the finished checkpoint) goes on to do it.
            if self._complete() and self.finished_before:
                self.logger.info(
                    "the run in %s is already complete (step %d, epoch %d): nothing to train",
                    trainer.run_dir,
                    self.state.step,
                    self.state.epoch,
                )
                self.finished = True
                return self._result()
            self._wrap_networks()
            self._train()
            return self._result()
        finally:
            self._unwrap_networks()
            self.metric_logger.close()
            if self.store is not None:
                self.store.close()

    def _result(self) -> FitResult:
        return FitResult(
            state=dataclasses.replace(self.state),
            complete=self.finished,
            interrupted=self.interrupted,
            resumed_from=self.resumed_from,
            checkpoint=self.last_checkpoint,
            steps_trained=self.state.step - self.start_step,
        )

    def _scaler(self) -> torch.amp.GradScaler | None:
        """The model's own GradScaler, or one the trainer owns for ``"16-mixed"``."""
        if not self.automatic:
            return None
        scalers = self.model.scalers()
        if len(scalers) > 1:
            raise ConfigurationError(
                f"automatic optimisation uses one GradScaler, but {type(self.model).__name__} "
                f"has {sorted(scalers)}"
            )
        if scalers:
            return next(iter(scalers.values()))
        self.own_scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.trainer.precision == "16-mixed"
        )
        return self.own_scaler

    def _store_on_main(self) -> CheckpointStore | None:
        """The checkpoint store; every rank reads it, only global rank 0 writes.

        Rank 0 (which holds the run folder's lock, or whose parent does) first removes the
        temporary files of saves that were killed, so a crash loop cannot fill the disk.
        """
        store = self.trainer._store(self.model)
        if self.context.is_main_process:
            removed = _wiring.remove_temporary_files(store)
            if removed:
                self.logger.warning(
                    "removed %d temporary file(s) left by interrupted checkpoint saves "
                    "(%d bytes): %s",
                    len(removed),
                    sum(size for _, size in removed),
                    ", ".join(path.name for path, _ in removed),
                )
        return store

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The precision context of forward passes (a shared no-op one for ``"32"``)."""
        precision = self.trainer.precision
        if precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if precision == "16-mixed":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return _NO_CONTEXT

    def _wrap_networks(self) -> None:
        """Wrap every network with trainable parameters for DDP (a no-op in one process)."""
        if not self.context.is_distributed:
            return
        for name, network in self.model.networks().items():
            if any(p.requires_grad for p in network.parameters()):
                setattr(self.model, name, self.context.wrap(network))

    def _unwrap_networks(self) -> None:
        """Give the model its own networks back, so no DDP wrapper outlives the process group."""
        for name, network in self.model.networks().items():
            setattr(self.model, name, self.context.unwrap(network))

    # ---- resume ---------------------------------------------------------------------------

    def _choose_checkpoint(self) -> str | None:
        """The checkpoint to resume from, decided on rank 0 and agreed by every rank.

        A refusal (checkpoints present but none usable, or any with ``resume='never'``) is
        raised on every rank, so none is left waiting.
        """
        trainer, store = self.trainer, self.store
        choice: str | None = None
        refusal: tuple[str, str] | None = None
        if self.context.is_main_process and store is not None:
            if trainer.resume == "auto":
                info = store.latest()
                choice = None if info is None else os.fspath(info.path)
                if info is None:
                    refusal = self._nothing_usable(store)
            elif trainer.resume == "never":
                if store.list() or self._checkpoint_entries(store):
                    refusal = (
                        "ConfigurationError",
                        f"resume='never', but {trainer.run_dir} already holds checkpoints; "
                        "use another run_dir, delete them, or resume='auto'",
                    )
            else:
                choice = trainer.resume
        if self.context.is_distributed:
            choice, refusal = self.context.broadcast_object((choice, refusal), src=0)
        if refusal is not None:
            kind, message = refusal
            raise (ConfigurationError if kind == "ConfigurationError" else CheckpointError)(message)
        return choice

    @staticmethod
    def _checkpoint_entries(store: CheckpointStore) -> list[Any]:
        """The entries of the default store's folder named like checkpoints (any verdict)."""
        entries = _wiring.inspect_checkpoints(store) or []
        return [entry for entry in entries if entry.step is not None]

    def _nothing_usable(self, store: CheckpointStore) -> tuple[str, str] | None:
        """Why ``resume='auto'`` must not start over when checkpoints exist but none loads."""
        found = self._checkpoint_entries(store)
        if not found:
            return None
        folder = self.trainer.run_dir / "checkpoints"
        what = "; ".join(f"{entry.path.name}: {entry.verdict} ({entry.reason})" for entry in found)
        return (
            "CheckpointError",
            f"resume='auto' found {len(found)} checkpoint file(s) in {folder} but none usable, "
            f"and will not start over on top of them: {what}. Nothing was changed. To start "
            f"fresh, move {folder} away (or use another run_dir); to resume from a checkpoint "
            "kept elsewhere, pass resume=<its path>",
        )

    def _resume_or_start(self) -> None:
        path = self._choose_checkpoint()
        if path is None:
            self._start_fresh()
            return
        assert self.store is not None
        try:
            checkpoint = self.store.load(path, map_location=self.device)
        except CheckpointError as exc:
            if self.trainer.resume != "auto":
                raise
            raise CheckpointError(
                f"{exc}. resume='auto' stops here rather than go back to an older checkpoint "
                f"unasked: move {Path(path).name} out of {Path(path).parent} to resume from the "
                "one before it, or pass resume=<the checkpoint to resume from>"
            ) from exc
        if self.trainer.resume not in ("auto", "never") and self.context.is_main_process:
            self._set_aside_newer(int(checkpoint["training_state"]["step"]), Path(path))
        self._restore(checkpoint, Path(path))

    def _set_aside_newer(self, step: int, path: Path) -> None:
        """Going back to an older checkpoint: move the newer ones (and their logs) aside.

        Otherwise a later ``resume='auto'`` would jump back to the abandoned line, and
        retention would delete the new line's checkpoints in favour of the old one's.
        """
        assert self.store is not None
        moved = _wiring.set_aside_checkpoints(self.store, step)
        if moved is None:
            return
        aside, files = moved
        metrics = self.trainer.run_dir / "metrics.jsonl"
        if metrics.is_file():
            shutil.copy2(metrics, aside / metrics.name)
        self.logger.warning(
            "resuming from %s (step %d), older than the %d checkpoint(s) after it: moved them "
            "to %s (with a copy of metrics.jsonl); nothing was deleted: %s",
            path,
            step,
            len(files),
            aside,
            ", ".join(file.name for file in files),
        )

    def _start_fresh(self) -> None:
        trainer, context = self.trainer, self.context
        self.data.set_epoch(0)
        if context.is_distributed:
            # Identical weights came from the shared seed; from here each rank draws its own
            # stream (dropout masks differ between ranks, as they would on separate data).
            seed_everything((trainer.seed + context.rank) % 2**32)
        self.metric_logger.resume(0)
        self.metric_logger.log_hyperparameters(self._hyperparameters())
        self.logger.info(
            "training %s in %s: %d %s(s), %d process(es) on %s",
            type(self.model).__name__,
            trainer.run_dir,
            trainer.total,
            trainer.unit,
            context.world_size,
            self.device,
        )

    def _hyperparameters(self) -> dict[str, Any]:
        trainer = self.trainer
        return {
            "unit": trainer.unit,
            "total": trainer.total,
            "accumulate": trainer.accumulate,
            "precision": trainer.precision,
            "clip_grad_norm": trainer.clip_grad_norm or 0.0,
            "seed": trainer.seed,
            "world_size": self.context.world_size,
            "model": type(self.model).__name__,
        }

    def _restore(self, checkpoint: Mapping[str, Any], path: Path) -> None:
        trainer, context = self.trainer, self.context
        if checkpoint.get("format") != _FORMAT:
            raise ResumeError(
                f"{path} is not a checkpoint of helios.trainer (format "
                f"{checkpoint.get('format')!r}, expected {_FORMAT!r})"
            )
        saved = checkpoint["trainer"]
        if saved["unit"] != trainer.unit or saved["accumulate"] != trainer.accumulate:
            raise ResumeError(
                f"{path} was written with unit={saved['unit']!r}, accumulate="
                f"{saved['accumulate']}; this trainer has unit={trainer.unit!r}, "
                f"accumulate={trainer.accumulate}: positions would not line up"
            )
        self.model.load_state_dict(checkpoint["model"])
        self.state.load_state_dict(checkpoint["training_state"])
        self.data.load_state_dict(checkpoint["data"])
        own = checkpoint.get("scaler")
        if own is not None and getattr(self, "own_scaler", None) is not None:
            self.own_scaler.load_state_dict(own)
        self.train_means.load_state_dict(checkpoint["train_means"])
        self.stopped_by_model = bool(saved["stopped_by_model"])
        self.finished_before = bool(saved["finished"])
        self.metric_logger.resume(self.state.step)
        self.last_checkpoint_step = self.state.step
        self.last_checkpoint = path
        self.last_valid_step = saved.get("last_valid_step")
        self.resumed_from = path
        self.start_step = self.state.step
        rng_states = checkpoint["rng"]
        if saved["world_size"] == context.world_size and context.rank < len(rng_states):
            restore_rng_state(rng_states[context.rank])
            epoch_start = checkpoint.get("epoch_start_rng")
            if epoch_start is not None and context.rank < len(epoch_start):
                self.epoch_start_rng = epoch_start[context.rank]
        else:
            self.logger.warning(
                "resuming %d process(es) from a checkpoint of %d: RNG streams restart from the "
                "seed, so this run is not bitwise identical to an uninterrupted one",
                context.world_size,
                saved["world_size"],
            )
            seed_everything((trainer.seed + context.rank + self.state.step) % 2**32)
        self.logger.info(
            "resumed from %s at step %d (epoch %d, batch %d of the epoch)",
            path,
            self.state.step,
            self.state.epoch,
            self.state.batch_in_epoch,
        )

    # ---- the loop -------------------------------------------------------------------------

    def _complete(self) -> bool:
        trainer, state = self.trainer, self.state
        if trainer.unit == "iteration" and state.step >= trainer.total:
            return True
        if trainer.unit == "epoch" and state.epoch >= trainer.total:
            return True
        patience = trainer.early_stop_patience
        if self.stopped_by_model:
            return True
        return patience is not None and state.early_stop_count >= patience

    def _train(self) -> None:
        model = self.model
        # Looked up once: the hot path must not rescan the model's attributes every step.
        self.networks = list(model.networks().values())
        self.optimizers = list(model.optimizers().values())
        if self.automatic and not self.optimizers:
            raise ConfigurationError(
                f"{type(model).__name__} has no optimizer attribute for automatic optimisation"
            )
        self.parameters = [p for net in self.networks for p in net.parameters()]
        self.schedulers = [  # ReduceLROnPlateau is stepped with the metric after validation
            scheduler
            for scheduler in model.schedulers().values()
            if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        ]
        # Loaders give CPU tensors: moving them is only needed for another device.
        self.move_batches = self.device.type != "cpu"
        model.train()
        model.on_training_start()
        self.bar: _wiring.ProgressBar | None = None
        if self.trainer.unit == "iteration":
            self.bar = self._progress_bar(self.trainer.total, self.state.step, "train")
        try:
            while not self._complete() and not self.interrupted:
                self._train_epoch()
        finally:
            if self.bar is not None:
                self.bar.close()
        if not self.interrupted:
            self.finished = True
            model.on_training_end()
            if self.last_valid_step != self.state.step:
                self._validate()
        if self.last_checkpoint_step != self.state.step or self.finished:
            self._checkpoint()
        if self.store is not None:
            self.store.wait()
        how = "stopped by a signal" if self.interrupted else "finished"
        self.logger.info(
            "training %s at step %d (epoch %d); last checkpoint: %s",
            how,
            self.state.step,
            self.state.epoch,
            self.last_checkpoint,
        )

    def _progress_bar(self, total: int, initial: int, desc: str) -> _wiring.ProgressBar | None:
        """A bar on global rank 0 (over steps, or over the batches of one epoch)."""
        if not self.context.is_main_process or self.trainer.progress is False:
            return None
        return _wiring.ProgressBar(
            total, initial=initial, desc=desc, unit="step", enabled=self.trainer.progress
        )

    def _train_epoch(self) -> None:
        state, trainer = self.state, self.trainer
        self.data.set_epoch(state.epoch)
        loader = self.data.train_dataloader()
        if loader is None:
            raise ConfigurationError(f"{type(self.data).__name__} has no training data")
        if not isinstance(loader, Sized):
            raise ConfigurationError(
                f"datamodule: {type(self.data).__name__}.train_dataloader() returned a "
                f"{type(loader).__name__} without len(); expected a helios.core.SizedIterable: "
                "the trainer needs the number of batches left in the epoch"
            )
        left = len(loader)
        epoch_length = state.batch_in_epoch + left
        if epoch_length == 0:
            raise ConfigurationError(f"{type(self.data).__name__} yields no training batches")
        if left == 0:  # a checkpoint of an older format, written before its epoch-end work
            self._after_step(epoch_done=True, step_done=False)
            return
        self._start_epoch()
        if trainer.unit == "epoch":
            description = f"epoch {state.epoch + 1}/{trainer.total}"
            self.bar = self._progress_bar(epoch_length, state.batch_in_epoch, description)
        window_start = state.batch_in_epoch
        for batch in loader:
            window = min(trainer.accumulate, epoch_length - window_start)
            last_in_window = state.batch_in_epoch + 1 - window_start == window
            self._train_batch(batch, window=window, last_in_window=last_in_window)
            if not last_in_window:
                continue
            if self.bar is not None:
                # steps for the run's bar, batches for an epoch's bar
                self.bar.update(
                    1 if trainer.unit == "iteration" else state.batch_in_epoch - window_start
                )
            window_start = state.batch_in_epoch
            if state.batch_in_epoch == epoch_length:
                continue  # the loader ends here (its workers with it); the epoch's end follows
            if self._after_step(epoch_done=False):
                return
        if state.batch_in_epoch != epoch_length:
            raise ResumeError(
                f"the training loader ended after {state.batch_in_epoch} of {epoch_length} "
                "batches of the epoch"
            )
        if trainer.unit == "epoch" and self.bar is not None:
            self.bar.close()
            self.bar = None
        self._after_step(epoch_done=True)

    def _start_epoch(self) -> None:
        """Call ``on_training_epoch_start``; on a resume inside the epoch, exactly as it ran first.

        At an epoch's start the RNG state is captured before the hook (and checkpointed). A run
        resumed inside the epoch calls the hook again, so that what it sets up (a curriculum, a
        mask, frozen layers) is there again, with the RNG state of the epoch's start: it draws
        what it drew the first time. The checkpoint's RNG state is put back afterwards, so the
        next batch draws exactly what the uninterrupted run drew.
        """
        model, state = self.model, self.state
        if state.batch_in_epoch == 0:
            self.epoch_start_rng = capture_rng_state()
            model.on_training_epoch_start(state.epoch)
            return
        resumed_rng = capture_rng_state()
        if self.epoch_start_rng is not None:
            restore_rng_state(self.epoch_start_rng)
        model.on_training_epoch_start(state.epoch)
        restore_rng_state(resumed_rng)

    def _train_batch(self, batch: Any, *, window: int, last_in_window: bool) -> None:
        model, state = self.model, self.state
        if self.move_batches:
            batch = _to_device(batch, self.device)
        model.on_training_batch_start(state)
        # The hot path: no per-step allocation of contexts that do nothing.
        if self.automatic and not last_in_window:
            with contextlib.ExitStack() as stack:
                for network in self.networks:
                    stack.enter_context(self.context.no_sync(network))
                metrics = self._forward_backward(batch, window)
        else:
            metrics = self._forward_backward(batch, window)
        self.train_means.add(metrics)
        state.batch_in_epoch += 1
        state.batches += 1
        if not self.automatic:
            state.step += 1
        elif last_in_window:
            self._optimizer_step()
        model.on_training_batch_end(state)

    def _forward_backward(self, batch: Any, window: int) -> dict[str, Any]:
        """``train_step`` under autocast, then backward of the (scaled) loss of the window."""
        with self.autocast():
            output = self.model.train_step(batch, self.state)
        loss, metrics = _split_output(output, automatic=self.automatic)
        if self.automatic:
            assert loss is not None
            if loss.ndim != 0 or not loss.requires_grad:
                _refuse_loss(loss)
            if window > 1:
                loss = loss / window
            if self.scaler is not None and self.scaler.is_enabled():
                loss = self.scaler.scale(loss)
            torch.autograd.backward(loss)
        return metrics

    def _optimizer_step(self) -> None:
        scaler, optimizers = self.scaler, self.optimizers
        assert scaler is not None
        if self.trainer.clip_grad_norm is not None:
            for optimizer in optimizers:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.trainer.clip_grad_norm)
        if scaler.is_enabled():
            for optimizer in optimizers:
                scaler.step(optimizer)
            scaler.update()
        else:
            for optimizer in optimizers:
                optimizer.step()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.model.scheduler_interval == "step":
            self._step_schedulers()
        self.state.step += 1

    def _step_schedulers(self) -> None:
        for scheduler in self.schedulers:
            scheduler.step()

    def _after_step(self, *, epoch_done: bool, step_done: bool = True) -> bool:
        """Logging, validation, the epoch's end, checkpoints and stop checks after a step.

        The checkpoint of a step comes after all of that step's work (its epoch-end validation
        included), so a run resumed from it repeats none of it. A stop requested on the run's
        last step still lets the end-of-run work happen (see :meth:`_train`).

        Args:
            epoch_done: this step ended the epoch.
            step_done: an optimizer step was just taken (``False`` only to finish an epoch
                whose last step an older checkpoint holds).

        Returns:
            Whether the epoch loop must end now.
        """
        state, trainer = self.state, self.trainer
        checkpoint_due = False
        if step_done and state.step % trainer.log_every == 0:
            self._log_training()
        if step_done and trainer.unit == "iteration":
            if trainer.valid_every is not None and state.step % trainer.valid_every == 0:
                self._validate()
            every = trainer.checkpoint_every
            checkpoint_due = every is not None and state.step % every == 0
        if epoch_done:
            self._end_epoch()
            if self._due_at_epoch_end(trainer.valid_every) and self.last_valid_step != state.step:
                self._validate()
            checkpoint_due = checkpoint_due or self._due_at_epoch_end(trainer.checkpoint_every)
        if checkpoint_due:
            self._checkpoint()
        stop = self.signals.requested is not None
        stop_by_model = self.model.should_training_stop()
        # One collective per step in the common case; a second only on the step that stops.
        if self.context.is_distributed and self.context.agree(stop or stop_by_model, "any"):
            stop_by_model = self.context.agree(stop_by_model, "any")
            stop = not stop_by_model
        elif self.context.is_distributed:
            stop = stop_by_model = False
        if stop_by_model:
            self.logger.info("should_training_stop() asked to end training at step %d", state.step)
            self.stopped_by_model = True
            return True
        if stop:
            name = self.signals.requested.name if self.signals.requested else "a stop signal"
            if self._complete():
                self.logger.warning(
                    "%s received on the last step (%d): finishing the run", name, state.step
                )
                return True
            self.logger.warning(
                "%s received: stopping after step %d and writing a checkpoint", name, state.step
            )
            self.interrupted = True
            return True
        return self._complete()

    def _end_epoch(self) -> None:
        model, state = self.model, self.state
        model.on_training_epoch_end(state.epoch)
        if model.scheduler_interval == "epoch" and self.automatic:
            self._step_schedulers()
        state.epoch += 1
        state.batch_in_epoch = 0
        self.data.set_epoch(state.epoch)

    def _due_at_epoch_end(self, every: int | None) -> bool:
        """Whether a cadence of ``every`` units (``None``: every epoch) falls on this epoch end."""
        if every is None:
            return True
        return self.trainer.unit == "epoch" and self.state.epoch % every == 0

    # ---- logging, validation, checkpoints -------------------------------------------------

    def _log_training(self) -> None:
        if self.train_means.count == 0:
            return
        metrics: dict[str, float | torch.Tensor] = {
            f"train/{name}": value for name, value in self.train_means.means().items()
        }
        for name, optimizer in self.model.optimizers().items():
            metrics[f"lr/{name}"] = float(optimizer.param_groups[0]["lr"])
        self.train_means.reset()
        reduced = self.context.all_reduce_mean(metrics)
        self.metric_logger.log_scalars(reduced, self.state.step)
        if self.bar is not None and "train/loss" in reduced:
            self.bar.set_postfix({"loss": f"{reduced['train/loss']:.4g}"})

    def _validate(self) -> None:
        loader = self.data.valid_dataloader()
        model, state = self.model, self.state
        self.last_valid_step = state.step
        if loader is None:
            return
        cycle = state.validation_cycles
        model.eval()
        model.on_validation_start(cycle)
        model.valid_metrics = _evaluate(
            loader,
            model.valid_step,
            model.on_validation_batch_start,
            model.on_validation_batch_end,
            context=self.context,
            autocast=self.autocast,
        )
        state.validation_cycles += 1
        self.metric_logger.log_scalars(
            {f"valid/{k}": v for k, v in model.valid_metrics.items()}, state.step
        )
        model.on_validation_end(cycle)
        model.train()
        if model.valid_metrics:
            self._after_validation()

    def _after_validation(self) -> None:
        model, state, trainer = self.model, self.state, self.trainer
        improved = model.have_metrics_improved()
        state.early_stop_count = 0 if improved else state.early_stop_count + 1
        if model.monitor is not None and model.monitor in model.valid_metrics:
            for scheduler in model.schedulers().values():
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(model.valid_metrics[model.monitor])
        patience = trainer.early_stop_patience
        if patience is not None and state.early_stop_count >= patience:
            self.logger.info(
                "early stopping at step %d: no improvement in %d validations",
                state.step,
                state.early_stop_count,
            )

    def _checkpoint(self) -> None:
        """Write a checkpoint of this step (collective: every rank gives its RNG state)."""
        context, state = self.context, self.state
        gathered = context.all_gather_object((capture_rng_state(), self.epoch_start_rng))
        rng_states = [now for now, _ in gathered]
        if context.is_main_process and self.store is not None:
            checkpoint = {
                "format": _FORMAT,
                "model": self.model.state_dict(),
                "training_state": state.state_dict(),
                "data": self.data.state_dict(),
                "rng": rng_states,
                # what on_training_epoch_start drew from, for a resume inside this epoch
                "epoch_start_rng": [start for _, start in gathered],
                "scaler": (
                    self.own_scaler.state_dict() if getattr(self, "own_scaler", None) else None
                ),
                "train_means": self.train_means.state_dict(),
                "trainer": {
                    "unit": self.trainer.unit,
                    "total": self.trainer.total,
                    "accumulate": self.trainer.accumulate,
                    "world_size": context.world_size,
                    "finished": self.finished,
                    "stopped_by_model": self.stopped_by_model,
                    "last_valid_step": self.last_valid_step,
                },
            }
            # Metrics only of a validation of exactly these weights: else "best" could be
            # weights that were never validated (e.g. diverged since the last validation).
            validated = self.last_valid_step == state.step
            info = self.store.save(
                checkpoint,
                step=state.step,
                epoch=state.epoch,
                metrics=dict(self.model.valid_metrics) if validated else {},
            )
            self.last_checkpoint = info.path
        self.last_checkpoint_step = state.step
        self.metric_logger.flush()


class _TestRun:
    """One call of :meth:`Trainer.test` in one process."""

    def __init__(
        self,
        trainer: Trainer,
        model: Model,
        data: DataSource,
        context: DistributedContext,
        logger: logging.Logger,
    ) -> None:
        self.trainer, self.model, self.data = trainer, model, data
        self.context, self.logger = context, logger

    def run(self, checkpoint: str | os.PathLike[str]) -> dict[str, float]:
        model, data, context = self.model, self.data, self.context
        seed_everything(self.trainer.seed)
        data.configure(rank=context.rank, world_size=context.world_size, seed=self.trainer.seed)
        data.setup()
        model.setup()
        store = self.trainer._store(model)
        try:
            info = _find_checkpoint(store, checkpoint, self.trainer.run_dir)
            saved = store.load(info.path, map_location=context.device)
        finally:
            store.close()
        model.load_state_dict(saved["model"])
        model.to(context.device)
        step = int(saved["training_state"]["step"])
        loader = data.test_dataloader()
        if loader is None:
            raise ConfigurationError(f"{type(data).__name__} has no test data")
        model.eval()
        model.on_testing_start()
        model.test_metrics = _evaluate(
            loader,
            model.test_step,
            model.on_testing_batch_start,
            model.on_testing_batch_end,
            context=context,
            autocast=lambda: _NO_CONTEXT,
        )
        model.on_testing_end()
        self.logger.info(
            "tested %s at step %d: %s",
            info.path.name,
            step,
            ", ".join(f"{k}={v:.4f}" for k, v in sorted(model.test_metrics.items())),
        )
        return dict(model.test_metrics)
