"""``Model``: the user's networks, optimizers and training logic, in one overridable class.

The user subclasses :class:`Model`, creates networks, optimizers, schedulers and (for fp16)
gradient scalers as attributes in :meth:`Model.setup`, and writes :meth:`Model.train_step`.
Like ``nn.Module`` finds its parameters, ``Model`` finds those attributes: the trainer moves
them to the device, wraps the networks for DDP, and saves and restores them without the user
writing a state dict.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from helios.core._checks import INITIALISED
from helios.core._errors import ConfigurationError, ResumeError
from helios.core._state import TrainingState
from helios.core._unwrap import unwrap
from helios.core._weights import load_network_weights, read_weights, write_weights

__all__ = ["ExportTarget", "Model", "StepOutput"]

#: What ``train_step`` may return: a loss, a dict holding ``"loss"`` (and other metrics), or,
#: for a model that optimises itself, ``None`` or a dict of metrics.
StepOutput = torch.Tensor | Mapping[str, torch.Tensor | float] | None


@dataclasses.dataclass
class ExportTarget:
    """Which network to export to ONNX, with an example of its inputs.

    Attributes:
        network: the network to export.
        example_inputs: positional inputs for one forward pass.
        input_names: names of the graph inputs (default: the names of ``forward``'s
            parameters).
        output_names: names of the graph outputs.
        dynamic_batch: whether dimension 0 of every input is a free batch size.
    """

    network: nn.Module
    example_inputs: tuple[Any, ...]
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    dynamic_batch: bool = True


class Model(abc.ABC):
    """Base class of the user's model: networks, optimizers and what one step does.

    Subclasses implement :meth:`setup` and :meth:`train_step`, and override whichever callbacks
    they need. Attributes that are ``nn.Module``, ``torch.optim.Optimizer``, a learning-rate
    scheduler or a ``torch.amp.GradScaler`` are discovered and saved automatically; anything else
    that must survive a restart goes through :meth:`extra_state_dict` and
    :meth:`load_extra_state_dict`.

    Attributes:
        automatic_optimization: ``True`` (default) lets the trainer do backward, accumulation,
            scaling, clipping and the optimizer and scheduler steps from the loss
            :meth:`train_step` returns. ``False`` means :meth:`train_step` optimises by itself
            (several optimizers, GANs) and returns ``None`` or a dict of metrics.
        scheduler_interval: ``"step"`` steps the schedulers after every optimizer step,
            ``"epoch"`` after every epoch.
        monitor: the validation metric :meth:`have_metrics_improved` watches (``None``: every
            validation counts as an improvement); a named validation set's metric is
            ``"<set name>/<metric>"`` (``"ood/loss"``): see
            :meth:`helios.data.DataModule.add_valid`.
        monitor_mode: whether smaller (``"min"``) or larger (``"max"``) is better.
        compile_modules: the block classes of the networks (a transformer's layer, say) that
            the trainer's ``compile`` setting compiles one by one ("regional" compilation):
            each block is compiled once and its code reused by the blocks like it, which cuts
            compile time, and it is the order that composes with FSDP2 (compile each block,
            then shard). Empty (default): each network is compiled whole.
        shard_modules: under ``Trainer(strategy="fsdp")``, the module classes sharded as units
            of their own (``(TransformerBlock,)``): each one's parameters are gathered just
            before its forward and freed after. Empty (default): each direct child of a network
            that has trainable parameters is a unit. The network itself is always sharded last
            and holds the parameters no unit does.
    """

    automatic_optimization: ClassVar[bool] = True
    scheduler_interval: ClassVar[Literal["step", "epoch"]] = "step"
    monitor: ClassVar[str | None] = None
    monitor_mode: ClassVar[Literal["min", "max"]] = "min"
    compile_modules: ClassVar[tuple[type[nn.Module], ...]] = ()
    shard_modules: ClassVar[tuple[type[nn.Module], ...]] = ()

    def __init__(self) -> None:
        """Create the model; networks and optimizers are made later, in :meth:`setup`."""
        self.device = torch.device("cpu")
        #: Metrics of the last validation pass, averaged over every sample of every process:
        #: the unnamed validation set's under their own names, a named set's as ``"<name>/<m>"``.
        self.valid_metrics: dict[str, float] = {}
        #: The validation set being evaluated, as named in ``DataModule.add_valid`` (``""``: the
        #: unnamed set); set by the trainer before each set's pass, for ``valid_step`` to read.
        self.validation_set = ""
        #: Metrics of the last test pass, averaged over every sample of every process.
        self.test_metrics: dict[str, float] = {}
        self._best_monitored: float | None = None
        #: The hyper-parameters of this model (see :meth:`save_hyperparameters`), written with
        #: the trainer's settings to TensorBoard and ``metrics.hparams.json``.
        self.hparams: dict[str, Any] = dict(getattr(self, "hparams", {}))
        setattr(self, INITIALISED, True)  # checked when training starts

    # ---- what the user writes -------------------------------------------------------------

    @abc.abstractmethod
    def setup(self) -> None:
        """Create networks, optimizers, schedulers (and scalers) as attributes."""

    @abc.abstractmethod
    def train_step(self, batch: Any, state: TrainingState) -> StepOutput:
        """Train on one batch; return the loss (or a dict with ``"loss"``) to optimise."""

    def valid_step(self, batch: Any, step: int) -> Mapping[str, torch.Tensor | float] | None:
        """Evaluate one validation batch; its metrics (weighted by size) form ``valid_metrics``."""
        return None

    def test_step(self, batch: Any, step: int) -> Mapping[str, torch.Tensor | float] | None:
        """Evaluate one test batch; its metrics, weighted by batch size, form ``test_metrics``."""
        return None

    def predict_step(self, batch: Any, index: int) -> Any:
        """Predict one batch for :meth:`Trainer.predict <helios.trainer.Trainer.predict>`.

        Return a tensor whose first dimension is the batch's samples (or a tuple, list or dict
        of such tensors). The default raises: override it to use ``predict``.

        Raises:
            ConfigurationError: always, unless overridden.
        """
        raise ConfigurationError(
            f"{type(self).__name__}.predict_step is not defined: override "
            "predict_step(self, batch, index) to return the batch's predictions (a tensor with "
            "one row per sample) to use Trainer.predict"
        )

    def export_target(self) -> ExportTarget | None:
        """The network to export to ONNX and an example input (``None``: nothing to export)."""
        return None

    # ---- callbacks --------------------------------------------------------------------------

    def on_training_start(self) -> None:
        """Called once before the first training batch (also after a resume)."""

    def on_training_end(self) -> None:
        """Called once after the last training batch."""

    def on_training_epoch_start(self, epoch: int) -> None:
        """Called at the start of every epoch, including a resumed partial one."""

    def on_training_epoch_end(self, epoch: int) -> None:
        """Called at the end of every epoch."""

    def on_training_batch_start(self, state: TrainingState) -> None:
        """Called before every training batch."""

    def on_training_batch_end(self, state: TrainingState) -> None:
        """Called after every training batch (after the optimizer step, if one was taken)."""

    def on_validation_start(self, validation_cycle: int) -> None:
        """Called before a validation pass."""

    def on_validation_batch_start(self, step: int) -> None:
        """Called before every validation batch."""

    def on_validation_batch_end(self, step: int) -> None:
        """Called after every validation batch."""

    def on_validation_end(self, validation_cycle: int) -> None:
        """Called after a validation pass; ``valid_metrics`` holds its results."""

    def on_testing_start(self) -> None:
        """Called before the test pass."""

    def on_testing_batch_start(self, step: int) -> None:
        """Called before every test batch."""

    def on_testing_batch_end(self, step: int) -> None:
        """Called after every test batch."""

    def on_testing_end(self) -> None:
        """Called after the test pass; ``test_metrics`` holds its results."""

    def on_predict_start(self) -> None:
        """Called before the prediction pass of :meth:`Trainer.predict`."""

    def on_predict_end(self) -> None:
        """Called after the prediction pass of :meth:`Trainer.predict`."""

    def should_training_stop(self) -> bool:
        """Return ``True`` to end training after the current step (a checkpoint is written).

        The run is then complete: ``fit`` again on its folder trains nothing. To try a few
        steps without a trace in the run folder, use the trainer's ``dry_run`` setting.
        """
        return False

    def save_hyperparameters(self, *names: str, **values: Any) -> None:
        """Record the arguments of the calling ``__init__`` in :attr:`hparams`.

        As Lightning's ``save_hyperparameters``: call it in your ``__init__``; without names it
        takes every argument but ``self`` (``**kwargs`` spread out), with names only those.
        Keyword arguments are recorded as they are given (e.g. a value computed in ``__init__``).

        Example:
            >>> class Classifier(Model):  # doctest: +SKIP
            ...     def __init__(self, lr: float = 1e-3, width: int = 64) -> None:
            ...         super().__init__()
            ...         self.save_hyperparameters()  # hparams == {"lr": 0.001, "width": 64}

        Raises:
            ConfigurationError: a name is not an argument of the calling ``__init__``.
        """
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        found: dict[str, Any] = {}
        if caller is not None:
            arguments = inspect.getargvalues(caller)
            for name in arguments.args:
                if arguments.locals.get(name) is not self:
                    found[name] = arguments.locals[name]
            if arguments.keywords is not None:
                found.update(arguments.locals.get(arguments.keywords) or {})
        del frame, caller
        if names:
            missing = [name for name in names if name not in found]
            if missing:
                raise ConfigurationError(
                    f"save_hyperparameters: {missing} are not arguments of the calling "
                    f"__init__ (its arguments: {sorted(found)})"
                )
            found = {name: found[name] for name in names}
        hparams = dict(getattr(self, "hparams", {}))
        hparams.update(found)
        hparams.update(values)
        self.hparams = hparams

    @property
    def best_monitored(self) -> float | None:
        """The best value of ``monitor`` so far, as :meth:`have_metrics_improved` keeps it."""
        return self._best_monitored

    def have_metrics_improved(self) -> bool:
        """Whether the last validation improved on the best so far (drives early stopping).

        The default watches ``valid_metrics[monitor]`` in the direction of ``monitor_mode`` and
        remembers the best value (it is part of the checkpoint). Without ``monitor`` every
        validation counts as an improvement.

        Raises:
            ConfigurationError: ``monitor`` names a metric the last validation did not return.
        """
        if self.monitor is None:
            return True
        if self.monitor not in self.valid_metrics:
            raise ConfigurationError(
                f"{type(self).__name__}.monitor is {self.monitor!r}, but validation returned "
                f"only {sorted(self.valid_metrics)}"
            )
        value = float(self.valid_metrics[self.monitor])
        best = self._best_monitored
        improved = best is None or (value < best if self.monitor_mode == "min" else value > best)
        if improved:
            self._best_monitored = value
        return improved

    # ---- discovery --------------------------------------------------------------------------

    def _attributes_of(self, kind: type | tuple[type, ...]) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if isinstance(value, kind)}

    def networks(self) -> dict[str, nn.Module]:
        """The ``nn.Module`` attributes, by attribute name (possibly DDP-wrapped)."""
        return self._attributes_of(nn.Module)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizer attributes, by attribute name."""
        return self._attributes_of(torch.optim.Optimizer)

    def schedulers(self) -> dict[str, Any]:
        """The learning-rate scheduler attributes (``ReduceLROnPlateau`` included)."""
        return self._attributes_of(
            (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        )

    def scalers(self) -> dict[str, torch.amp.GradScaler]:
        """The ``torch.amp.GradScaler`` attributes."""
        return self._attributes_of(torch.amp.GradScaler)

    def parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of every discovered network, each once (shared ones are not repeated).

        For an optimizer over several networks: ``AdamW(self.parameters(), lr=...)`` after they
        are created in :meth:`setup`.
        """
        seen: set[int] = set()
        for network in self.networks().values():
            for parameter in network.parameters():
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    yield parameter

    # ---- modes and devices ------------------------------------------------------------------

    def train(self, mode: bool = True) -> Model:
        """Put every network in training mode (``mode=False``: evaluation mode)."""
        for network in self.networks().values():
            network.train(mode)
        return self

    def eval(self) -> Model:
        """Put every network in evaluation mode."""
        return self.train(False)

    def to(self, device: torch.device | str) -> Model:
        """Move every network to ``device`` and remember it in ``self.device``."""
        self.device = torch.device(device)
        for network in self.networks().values():
            network.to(self.device)
        return self

    # ---- state ------------------------------------------------------------------------------

    def extra_state_dict(self) -> dict[str, Any]:
        """Override to save state kept outside the discovered attributes."""
        return {}

    def load_extra_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Override to restore what :meth:`extra_state_dict` saved."""
        if state_dict:
            raise ResumeError(
                f"the checkpoint holds extra state {sorted(state_dict)} but "
                f"{type(self).__name__}.load_extra_state_dict is not overridden to restore it"
            )

    def state_dict(self) -> dict[str, Any]:
        """Networks (unwrapped), optimizers, schedulers, scalers and the extra state."""
        return {
            "networks": {name: unwrap(net).state_dict() for name, net in self.networks().items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
            "schedulers": {name: sch.state_dict() for name, sch in self.schedulers().items()},
            "scalers": {name: scaler.state_dict() for name, scaler in self.scalers().items()},
            "best_monitored": self._best_monitored,
            "extra": self.extra_state_dict(),
        }

    def save_weights(
        self, path: str | os.PathLike[str], *, source: Mapping[str, str] | None = None
    ) -> Path:
        """Write the networks' weights alone to ``path``, a file plain ``torch.load`` opens.

        The file is ``{"format": "helios-weights/1", "networks": {name: state_dict},
        "source": {...}}``, readable anywhere with ``torch.load(path, weights_only=True)``; see
        :meth:`load_weights`. ``helios checkpoints extract`` writes the same from a checkpoint.

        Returns:
            the path written.
        """
        networks = {name: unwrap(net).state_dict() for name, net in self.networks().items()}
        return write_weights(networks, path, source=source)

    def load_weights(self, path: str | os.PathLike[str], *, strict: bool = True) -> dict[str, str]:
        """Load a weights file (:meth:`save_weights`, ``helios checkpoints extract``).

        Call it after :meth:`setup` created the networks; each saved network goes into the
        attribute of the same name. Optimizers and the rest of the training state are not
        touched: this is for inference and fine-tuning, not for resuming a run.

        Args:
            path: the weights file.
            strict: require the same network names and every key of each state_dict
                (``False``: load what matches by name, as ``nn.Module.load_state_dict`` does).

        Returns:
            the file's ``source`` record (where the weights came from: step, SHA-256, ...).

        Raises:
            ConfigurationError: ``path`` is missing or not a weights file.
            ResumeError: the networks do not match the file.
        """
        loaded = read_weights(path)
        current = {name: unwrap(net) for name, net in self.networks().items()}
        load_network_weights(current, loaded["networks"], str(path), strict=strict)
        return dict(loaded.get("source", {}))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output into the attributes :meth:`setup` created.

        Raises:
            ResumeError: the saved state names attributes this model does not have (or lacks
                ones it has), or a network's parameters do not fit.
        """
        groups: dict[str, dict[str, Any]] = {
            "networks": self.networks(),
            "optimizers": self.optimizers(),
            "schedulers": self.schedulers(),
            "scalers": self.scalers(),
        }
        for group, current in groups.items():
            saved = state_dict.get(group)
            if not isinstance(saved, dict):
                raise ResumeError(f"the saved model state has no {group!r} section")
            if saved.keys() != current.keys():
                raise ResumeError(
                    f"{type(self).__name__} has {group} {sorted(current)} but the checkpoint "
                    f"holds {sorted(saved)}; was setup() changed since it was written?"
                )
        for name, net in groups["networks"].items():
            try:
                unwrap(net).load_state_dict(state_dict["networks"][name])
            except RuntimeError as error:
                raise ResumeError(
                    f"network {name!r} does not fit its saved state: {error}"
                ) from error
        for group in ("optimizers", "schedulers", "scalers"):
            for name, obj in groups[group].items():
                expected = _hyperparameter_names(obj) if group == "optimizers" else set()
                obj.load_state_dict(state_dict[group][name])
                missing = expected - _hyperparameter_names(obj)
                if missing:
                    raise ResumeError(
                        f"optimizer {name!r} is a {type(obj).__name__}, but its saved state "
                        f"lacks its settings {sorted(missing)}: the checkpoint was written by "
                        "another optimizer class. Resume with the optimizer it was written "
                        "with, or start a fresh run"
                    )
        best = state_dict.get("best_monitored")
        self._best_monitored = None if best is None else float(best)
        self.load_extra_state_dict(dict(state_dict.get("extra", {})))


def _hyperparameter_names(optimizer: Any) -> set[str]:
    """The settings every parameter group of ``optimizer`` has (``lr``, ``betas``, …)."""
    groups = getattr(optimizer, "param_groups", None) or [{}]
    return set.intersection(*(set(group) - {"params"} for group in groups))
