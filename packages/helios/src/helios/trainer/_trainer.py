"""``Trainer``: the user's entry point to ``fit``, ``test`` and ``export``.

This module is the facade: it validates the settings (:mod:`~helios.trainer._settings`) and
hands each call to the module that owns it -- processes to :mod:`~helios.trainer._launch`, the
loop to :mod:`~helios.trainer._loop`, checkpoints to :mod:`~helios.trainer._checkpoint`. The
concrete store, loggers and process group come from :mod:`helios.trainer._wiring` unless the
user passes objects (or factories) of their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from helios.core import (
    CheckpointStore,
    ConfigurationError,
    DataSource,
    DistributedContext,
    MetricLogger,
    Model,
    seed_everything,
)
from helios.trainer import _checkpoint, _launch, _lock, _run_config, _seams, _wiring
from helios.trainer._callbacks import Callback, Callbacks, default_callbacks
from helios.trainer._dry_run import dry_fit
from helios.trainer._evaluate import evaluate
from helios.trainer._fit import FitResult
from helios.trainer._fsdp import FSDP
from helios.trainer._inputs import check_model
from helios.trainer._predict import run_predict
from helios.trainer._settings import (
    DEFAULT_KEEP_CHECKPOINTS,
    DEFAULT_TIMEOUT,
    CheckpointStoreFactory,
    Devices,
    MetricLoggerFactory,
    Settings,
)
from helios.trainer._signals import RESUMABLE_EXIT_CODE, ForwardSignals

__all__ = ["FitResult", "Trainer"]

_NO_CONTEXT = contextlib.nullcontext()


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
            (as :meth:`Model.have_metrics_improved` says); ``None`` never stops early. A
            shortcut for ``callbacks=[EarlyStopping(patience)]``; not both.
        seed: seeds every RNG at the start of a fresh run, and the data order.
        deterministic: use deterministic kernels only (see
            :func:`helios.core.set_deterministic`).
        devices: ``"auto"`` (every visible GPU, one process each, else the CPU), ``"cpu"``, a
            number of processes (GPUs when CUDA is available, else CPU processes with Gloo),
            or a list of GPU ids.
        backend: process-group backend, ``"auto"`` (NCCL with CUDA, Gloo on CPU), ``"nccl"``
            or ``"gloo"``.
        tensorboard: write TensorBoard event files besides ``metrics.jsonl`` (``None``: yes).
            Not with ``metric_logger``.
        progress: show a progress bar (the built-in
            :class:`~helios.trainer.TrainingProgressBar` callback); ``None`` shows it when the
            output is a terminal.
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
            default folder under ``run_dir`` (the trainer never closes it), or a factory the
            trainer calls in each process with the checkpoint folder ``run_dir/checkpoints``
            (and closes what it returns). Spawned processes (``devices`` > 1) need a factory
            or an instance that pickles. Not with ``keep_checkpoints``, ``keep_best``,
            ``async_checkpoints``.
        metric_logger: a :class:`~helios.core.MetricLogger` to use instead of the default
            TensorBoard + ``metrics.jsonl`` loggers (never closed by the trainer), or a factory
            called with ``run_dir`` (its logger is closed). It is used on global rank 0 only
            and given metrics already averaged over the processes. Not with ``tensorboard``.
        distributed: a :class:`~helios.core.DistributedContext` to use instead of detecting
            one (no processes are spawned then). Not with ``devices``, ``backend``,
            ``timeout``.
        callbacks: :class:`~helios.trainer.Callback` objects, called after the model's hooks
            of the same name, in this order; stateful ones are checkpointed.
        dry_run: try the job: ``fit`` trains this many optimizer steps, validates and tests (when
            there is test data) through every hook and callback, in a temporary folder that is
            then deleted: nothing is written to ``run_dir``, and a later real run starts from
            step 0. (``Model.should_training_stop`` instead ends the run for good.)
        config: the resolved config the run was built from (:func:`~helios.trainer.from_config`
            passes it): ``fit`` saves it as ``run_dir/config.toml``, its SHA-256 goes into every
            checkpoint, and resuming with a config that differs is refused with the differences,
            except for the keys of ``SAFE_TO_CHANGE_ON_RESUME`` and ``allow_change``.
        allow_change: config keys (dotted: ``"model.optimizer.lr"``, or a table's prefix) a
            resume may change; each accepted change is recorded in
            ``run_dir/config-changes.jsonl`` with the step it took effect at.
        config_dir: the folder relative ``class = "file.py:Name"`` paths of ``config`` are
            found from (the config file's; :func:`~helios.trainer.from_config` passes it). It is
            no part of the config's identity: a project moved with its config resumes.
        non_finite: what a NaN or infinite training loss does: ``"stop"`` ends training with a
            :class:`~helios.trainer.NonFiniteLossError` naming the step, the metric and the last
            good checkpoint, writing no checkpoint of the poisoned state (checked at logging
            points and before each checkpoint: no device sync per step); ``"skip"`` skips the
            optimizer step of a window whose loss is not finite, counts it
            (``train/skipped_steps``) and leaves it out of the logged means (one device sync
            per batch, as a ``GradScaler`` has); ``"ignore"`` trains on. A ``GradScaler``'s
            own skipped steps (overflowing gradients under ``"16-mixed"``) are not non-finite
            losses. The built-in :class:`~helios.trainer.NonFiniteLossGuard` callback.
        track_performance: log throughput, step time, data-loader wait, MFU, memory and the
            slowest rank at every logging point (the built-in
            :class:`~helios.trainer.PerformanceMonitor`; pass your own in ``callbacks`` to
            configure it, e.g. the peak FLOP/s); ``False`` drops it.
        hparams: your hyper-parameters (learning rate, batch size, ...), written with the
            trainer's settings and ``Model.hparams`` (see :meth:`Model.save_hyperparameters`)
            to TensorBoard's HPARAMS tab and ``metrics.hparams.json``; a resumed run whose
            hyper-parameters differ from its checkpoint's warns with each difference.
        compile: compile the networks with ``torch.compile`` for ``fit``: ``False``
            (default), ``True``, or a dict of ``torch.compile``'s options (``mode``,
            ``dynamic``, ``fullgraph``, ``backend``, ``options``) and ``regional``. Every
            network with trainable parameters is compiled in place (``nn.Module.compile``), so
            checkpoints keep the plain network's keys and resume with or without compile. When
            the model names block classes in :attr:`Model.compile_modules
            <helios.core.Model.compile_modules>`, each block is compiled instead of the whole
            network (``regional``: ``False`` compiles whole networks anyway). Compilation makes
            the first steps slow; see the compile guide.
        strategy: how the networks are spread over several processes: ``"auto"`` and
            ``"ddp"`` replicate them (DDP); ``"fsdp"`` shards parameters, gradients and
            optimizer state over the processes with FSDP2 (``fully_shard``), and
            :class:`~helios.trainer.FSDP` sets its options (HSDP across nodes, resharding,
            CPU offload). See :doc:`/guides/sharded`. With one process both train unsharded.

    Raises:
        ConfigurationError: an argument has a value the trainer cannot work with, or two
            arguments conflict.
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
        tensorboard: bool | None = None,
        progress: bool | None = None,
        resume: str | os.PathLike[str] = "auto",
        keep_checkpoints: int | None = DEFAULT_KEEP_CHECKPOINTS,
        keep_best: int | None = None,
        async_checkpoints: bool = False,
        exit_on_signal: bool = True,
        timeout: timedelta = DEFAULT_TIMEOUT,
        checkpoint_store: CheckpointStore | CheckpointStoreFactory | None = None,
        metric_logger: MetricLogger | MetricLoggerFactory | None = None,
        distributed: DistributedContext | None = None,
        callbacks: Sequence[Callback] = (),
        dry_run: int | None = None,
        config: Mapping[str, Any] | None = None,
        allow_change: Sequence[str] = (),
        config_dir: str | os.PathLike[str] | None = None,
        non_finite: Literal["stop", "skip", "ignore"] = "stop",
        track_performance: bool = True,
        hparams: Mapping[str, Any] | None = None,
        compile: bool | Mapping[str, Any] = False,
        strategy: Literal["auto", "ddp", "fsdp"] | FSDP = "auto",
    ) -> None:
        """Validate and keep the settings; nothing starts until :meth:`fit` or :meth:`test`."""
        self.settings = Settings.of_run_dir(
            run_dir,
            unit=unit,
            total=total,
            valid_every=valid_every,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            accumulate=accumulate,
            precision=precision,
            clip_grad_norm=clip_grad_norm,
            early_stop_patience=early_stop_patience,
            seed=seed,
            deterministic=deterministic,
            devices=devices,
            backend=backend,
            tensorboard=tensorboard,
            progress=progress,
            resume=resume,
            keep_checkpoints=keep_checkpoints,
            keep_best=keep_best,
            async_checkpoints=async_checkpoints,
            exit_on_signal=exit_on_signal,
            timeout=timeout,
            checkpoint_store=checkpoint_store,
            metric_logger=metric_logger,
            distributed=distributed,
            callbacks=tuple(callbacks),
            dry_run=dry_run,
            config=dict(config) if config is not None else None,
            allow_change=tuple(allow_change),
            config_dir=Path(config_dir).resolve() if config_dir is not None else None,
            non_finite=non_finite,
            track_performance=track_performance,
            hparams=dict(hparams) if isinstance(hparams, Mapping) else hparams,
            compile=dict(compile) if isinstance(compile, Mapping) else compile,
            strategy=strategy,
        )
        # refused now rather than in fit: a bad callback, a duplicate state_key, a conflict
        Callbacks(
            default_callbacks(
                callbacks,
                early_stop_patience=early_stop_patience,
                progress=progress,
                non_finite=non_finite,
                track_performance=track_performance,
            )
        )

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return self.settings.run_dir

    def fit(self, model: Model, datamodule: DataSource) -> FitResult:
        """Train ``model`` on ``datamodule``, resuming from ``run_dir`` when it can.

        With several devices this process spawns one process per device and waits for them;
        ``model`` is then loaded with the final checkpoint's state.

        Returns:
            How training ended.

        Raises:
            SystemExit: with status 75 after a stop signal, when ``exit_on_signal`` is set.
        """
        settings = self.settings
        check_model(model, datamodule)
        if settings.dry_run is not None:
            return dry_fit(self, model, datamodule)
        if settings.config is not None:
            _run_config.guard(settings, lambda: _launch.latest_checkpoint(settings, model))
        nprocs = _launch.process_count(settings)
        # Named GPUs are made the visible ones in fresh processes, so even one id is spawned.
        launched = settings.distributed is not None or _wiring.launched_externally()
        if nprocs > 1 or (_launch.named_gpus(settings) and not launched):
            _seams.check_picklable(settings, nprocs)
            # This process holds the run folder for the ranks it spawns (they take no lock).
            with _lock.lock_run_folder(settings.run_dir, "fit"):
                start = _launch.latest_checkpoint(settings, model)
                datamodule.prepare_data()
                with ForwardSignals():
                    _launch.spawn_fit(settings, model, datamodule, nprocs)
                result = _launch.result_after_spawn(settings, model, start)
        else:
            result = _launch.run_here(settings, model, datamodule, prepare=True)
        if result.interrupted and settings.exit_on_signal:
            raise SystemExit(RESUMABLE_EXIT_CODE)
        return result

    def test(
        self,
        model: Model,
        datamodule: DataSource,
        checkpoint: Literal["best", "last"] | str | os.PathLike[str] | None = "best",
    ) -> dict[str, float]:
        """Evaluate ``model`` on the test data with the weights of a checkpoint of this run.

        Args:
            model: a fresh model (its ``setup`` is called here).
            datamodule: the data; its test loader is used.
            checkpoint: ``"best"`` (by ``Model.monitor``; the last one when there is no best),
                ``"last"``, a checkpoint path, or ``None``: ``model`` as it is (no ``setup``).

        Returns:
            The test metrics, averaged over batches and processes (also in
            ``model.test_metrics``).

        Raises:
            CheckpointError: there is no checkpoint to test.
        """
        settings = self.settings
        check_model(model, datamodule)
        context = settings.distributed or _wiring.build_context(
            settings.backend, settings.timeout, _launch.device_kind(settings)
        )
        try:
            with _lock.hold_run_folder(settings.run_dir, "test", context):
                logger = _wiring.start_logging(settings.run_dir, context)
                try:
                    return self._test(model, datamodule, context, logger, checkpoint)
                except BaseException:
                    logger.exception("testing failed on rank %d", context.rank)
                    raise
                finally:
                    _wiring.stop_logging()
        finally:
            if settings.distributed is None:
                context.close()

    def _test(
        self,
        model: Model,
        data: DataSource,
        context: DistributedContext,
        logger: logging.Logger,
        checkpoint: str | os.PathLike[str] | None,
    ) -> dict[str, float]:
        settings = self.settings
        seed_everything(settings.seed)
        data.configure(rank=context.rank, world_size=context.world_size, seed=settings.seed)
        data.setup()
        name, step = "the model in memory", -1
        if checkpoint is not None:
            model.setup()
            with _seams.checkpoint_store(settings, model) as store:
                info = _checkpoint.find_checkpoint(store, checkpoint, settings.run_dir)
                saved = _checkpoint.load(store, info.path, map_location=context.device)
            model.load_state_dict(_checkpoint.model_state(saved, info.path))
            name, step = info.path.name, _checkpoint.training_state(saved).step
        model.to(context.device)
        loader = data.test_dataloader()
        if loader is None:
            raise ConfigurationError(f"{type(data).__name__} has no test data")
        model.eval()
        model.on_testing_start()
        model.test_metrics = evaluate(
            loader,
            model.test_step,
            model.on_testing_batch_start,
            model.on_testing_batch_end,
            context=context,
            autocast=lambda: _NO_CONTEXT,
        )
        model.on_testing_end()
        logger.info(
            "tested %s at step %d: %s",
            name,
            step,
            ", ".join(f"{k}={v:.4f}" for k, v in sorted(model.test_metrics.items())),
        )
        if step >= 0 and model.test_metrics:  # a checkpoint's: recorded at its step
            with _seams.metric_logger(settings, context) as metric_logger:
                metric_logger.log_scalars(
                    {f"test/{k}": v for k, v in model.test_metrics.items()}, step
                )
        return dict(model.test_metrics)

    def predict(
        self,
        model: Model,
        datamodule: DataSource,
        checkpoint: Literal["best", "last"] | str | os.PathLike[str] | None = "best",
    ) -> list[Any]:
        """Run ``model.predict_step`` over the prediction data (``DataModule.add_predict``).

        Runs in this process, as :meth:`test` (no processes are spawned): under ``torchrun``
        or with ``distributed=`` each rank predicts its shard and every rank gets all outputs.
        See the inference guide.

        Args:
            model: the model; with a ``checkpoint`` its ``setup`` is called and the weights are
                loaded, with ``None`` it is used as it is (``setup`` is called only when it has
                no networks yet) and nothing under ``run_dir`` is read or written.
            datamodule: the data; its ``predict_dataloader()`` is used.
            checkpoint: ``"best"``, ``"last"``, a checkpoint path (as for :meth:`test`) or
                ``None``.

        Returns:
            On every rank, on the CPU: the outputs of ``predict_step`` in dataset order, cut in
            batches of the prediction loader's batch size, so ``torch.cat`` of the list gives one
            row per sample, in order, whatever the number of processes.
        """
        check_model(model, datamodule)
        return run_predict(self.settings, model, datamodule, checkpoint)

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
        check_model(model, None)
        settings = self.settings
        # A checkpoint on read-only storage exports (to a writable --out) without the lock.
        with _lock.lock_run_folder(settings.run_dir, "export", writable=path is None):
            model.setup()
            with _seams.checkpoint_store(settings, model) as store:
                info = _checkpoint.find_checkpoint(store, checkpoint, settings.run_dir)
                saved = _checkpoint.read(store.load(info.path, map_location="cpu"), info.path)
            model.load_state_dict(_checkpoint.model_state(saved, info.path))
            target = model.export_target()
            if target is None:
                raise ConfigurationError(
                    f"{type(model).__name__}.export_target() returns None: override it to name "
                    "the network to export and an example input"
                )
            default = settings.run_dir / "onnx" / f"{type(model).__name__}.onnx"
            out = Path(path) if path is not None else default
            return _wiring.export_target(
                target, out, opset=opset, metadata=_checkpoint.provenance(info, saved)
            )
