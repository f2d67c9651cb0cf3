"""``DataModule``: the user's datasets, how each is loaded, and where training stands in them.

The user subclasses it and writes :meth:`DataModule.setup`, one ``add_train`` / ``add_valid`` /
``add_test`` call per dataset (``add_valid`` once per validation set, each further set named);
the trainer drives the rest through the :class:`~helios.core.DataSource` protocol. The training
position (epoch, samples consumed, the curriculum phase) is the module's state, saved in every
checkpoint, so a resumed run continues with the first batch it had not trained on, at any
number of ranks.

Curriculum: each ``add_train`` call adds a *phase* (a dataset with its loader settings). A phase
given ``epochs=k`` hands over to the next after ``k`` epochs; :meth:`DataModule.set_phase` moves
on by hand. The phase index is part of the state.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Final, cast

from torch.utils.data import DataLoader, Dataset

from helios.core import ConfigurationError, ResumeError
from helios.data._loader import BatchKeys, ResumableDataLoader, build_torch_loader
from helios.data._params import DataLoaderParams
from helios.data._position import SamplePosition
from helios.data._registries import SAMPLER_REGISTRY
from helios.data._sampler import ResumableSampler

__all__ = ["DataModule", "TrainingPhase"]

_STATE_VERSION: Final = 1
_MAX_SEED: Final = 2**64 - 1


@dataclasses.dataclass(frozen=True)
class TrainingPhase:
    """One stage of a curriculum: a training dataset and how it is loaded.

    Attributes:
        dataset: the map-style training dataset.
        params: its loader settings.
        epochs: how many epochs the phase lasts before the next phase starts; ``None`` until
            :meth:`DataModule.set_phase` moves on (the last phase lasts for ever).
        name: a label for logs.
    """

    dataset: Dataset[Any]
    params: DataLoaderParams
    epochs: int | None = None
    name: str = ""


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum or (maximum is not None and value > maximum):
        expected = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigurationError(f"{name} must be {expected}, got {value}")
    return value


def _dataset_size(dataset: Dataset[Any], role: str) -> int:
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigurationError(
            f"the {role} dataset must be map-style with a len(); {type(dataset).__name__} has none"
        ) from None


#: What ``DataModule.__init__`` sets: reading one of them without it is a forgotten super().
_INIT_ATTRIBUTES: Final = frozenset(
    {
        "_phases",
        "_valid",
        "_test",
        "_rank",
        "_world_size",
        "_seed",
        "_position",
        "_phase",
        "_phase_start_epoch",
        "_train_loader",
        "_valid_loaders",
        "_test_loader",
        "_predict",
        "_predict_loader",
        "_restored_dataset_size",
        "_setup_depth",
    }
)


class DataModule(abc.ABC):
    """The datasets of a run and their loaders: override :meth:`setup`, Helios does the rest.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> class Numbers(DataModule):
        ...     def setup(self) -> None:
        ...         self.add_train(TensorDataset(torch.arange(10.0)),
        ...                        DataLoaderParams(batch_size=4, shuffle=True))
        ...         self.add_valid(TensorDataset(torch.arange(4.0)), DataLoaderParams(batch_size=2))
        >>> data = Numbers()
        >>> data.setup()
        >>> data.configure(rank=0, world_size=1, seed=7)
        >>> data.set_epoch(0)
        >>> loader = data.train_dataloader()
        >>> len(loader), next(iter(loader))[0].shape, data.state_dict()["consumed"]
        (3, torch.Size([4]), 4)

    :meth:`setup` may be called more than once (``fit`` then ``test``): each call starts from
    no datasets, so nothing is added twice; the training position is kept.

    The training position (epoch, samples consumed) lives in one
    :class:`~helios.data.SamplePosition` (:attr:`position`) that the module owns and lends to
    each training sampler it builds: reading :attr:`epoch` or :attr:`consumed` reads it, and
    nothing copies it.

    Several validation sets: call :meth:`add_valid` once per set, naming every set but one
    (``add_valid(ood_set, params, name="ood")``). :meth:`valid_dataloaders` returns their loaders
    by name (``""`` for the unnamed set); :meth:`valid_dataloader` returns the first set's. The
    trainer logs the unnamed set's metrics as ``valid/<metric>`` and a named set's as
    ``valid/<name>/<metric>``. The validation sets are not part of :meth:`state_dict`.

    Validation, test and prediction loaders read their dataset in order, sharded over the ranks
    *without padding*: rank ``r`` of ``W`` reads samples ``r, r + W, ...``, so every sample is
    evaluated exactly once and ranks differ by at most one sample (hence at most one batch).
    Reduce metrics by sums and counts, not by per-batch collectives.
    """

    def __init__(self) -> None:
        """Start with no datasets, single-process, seed 0, epoch 0, phase 0."""
        self._phases: list[TrainingPhase] = []
        self._valid: dict[str, tuple[Dataset[Any], DataLoaderParams]] = {}
        self._test: tuple[Dataset[Any], DataLoaderParams] | None = None
        self._predict: tuple[Dataset[Any], DataLoaderParams] | None = None
        self._rank = 0
        self._world_size = 1
        self._seed = 0
        self._position = SamplePosition()
        self._phase = 0
        self._phase_start_epoch = 0
        self._train_loader: ResumableDataLoader[Any] | None = None
        self._valid_loaders: dict[str, DataLoader[Any]] = {}
        self._test_loader: DataLoader[Any] | None = None
        self._predict_loader: DataLoader[Any] | None = None
        self._restored_dataset_size: int | None = None
        self._setup_depth = 0

    def __getattr__(self, name: str) -> Any:
        """Only reached when an attribute is missing: say so if ``__init__`` was skipped."""
        if name in _INIT_ATTRIBUTES and "_setup_depth" not in self.__dict__:
            raise ConfigurationError(
                f"{type(self).__name__}.__init__ did not call super().__init__(): the "
                "DataModule's own state is missing; expected super().__init__() first in "
                "__init__"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Make each subclass's ``setup`` start from no datasets, however often it is called."""
        super().__init_subclass__(**kwargs)
        setup = cls.__dict__.get("setup")
        if setup is None or getattr(setup, "_helios_clears_datasets", False):
            return
        user_setup = cast("Callable[[DataModule], None]", setup)

        @functools.wraps(user_setup)
        def clearing_setup(self: DataModule) -> None:
            if "_setup_depth" not in vars(self):
                raise ConfigurationError(
                    f"{type(self).__name__}.__init__ must call super().__init__() before setup()"
                )
            if self._setup_depth == 0:  # a subclass calling super().setup() must not clear
                self._clear_datasets()
            self._setup_depth += 1
            try:
                user_setup(self)
            finally:
                self._setup_depth -= 1

        clearing_setup._helios_clears_datasets = True  # type: ignore[attr-defined]
        setattr(cls, "setup", clearing_setup)  # noqa: B010 - mypy forbids assigning a method

    # --- the user's part ----------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download or build data once, before any training process exists (default: nothing)."""

    @abc.abstractmethod
    def setup(self) -> None:
        """Create the datasets and add them.

        One call of ``add_train`` (or several, one per phase), ``add_valid``, ``add_test`` and
        ``add_predict`` (for ``Trainer.predict``) per dataset.
        """

    def add_train(
        self,
        dataset: Dataset[Any],
        params: DataLoaderParams | None = None,
        *,
        epochs: int | None = None,
        name: str = "",
    ) -> None:
        """Add a training dataset: the next curriculum phase (the only one, usually).

        Args:
            dataset: a map-style dataset.
            params: its loader settings (default ``DataLoaderParams()``).
            epochs: how long this phase lasts before the next ``add_train``'s phase starts;
                ``None``: until :meth:`set_phase`.
            name: a label for the phase.

        Raises:
            ConfigurationError: ``dataset`` has no length, ``params`` is not a
                ``DataLoaderParams`` or ``epochs`` is not a positive int.
        """
        _dataset_size(dataset, "training")
        params = self._check_params(params)
        if epochs is not None:
            _check_int("epochs", epochs, 1)
        self._phases.append(TrainingPhase(dataset, params, epochs, name))

    def add_valid(
        self,
        dataset: Dataset[Any],
        params: DataLoaderParams | None = None,
        name: str | None = None,
    ) -> None:
        """Add a validation dataset (read in order, sharded without padding).

        Call it once per validation set. The trainer validates every set at each validation
        point, in the order they were added. The unnamed set (``name=None``, at most one) logs
        its metrics as ``valid/<metric>`` and keeps their plain names in
        :attr:`~helios.core.Model.valid_metrics`; a set named ``"ood"`` logs
        ``valid/ood/<metric>`` and appears there as ``"ood/<metric>"`` (so
        ``Model.monitor = "ood/loss"`` watches it).

        Args:
            dataset: a map-style dataset.
            params: its loader settings (default ``DataLoaderParams()``).
            name: the set's name: non-empty, without ``/``; ``None`` for the unnamed set.

        Raises:
            ConfigurationError: a set of this name (or a second unnamed set) was already added,
                a bad name, or a bad argument.
        """
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ConfigurationError(
                f"add_valid name must be None or a non-empty str without '/', got {name!r}"
            )
        key = name or ""
        if key in self._valid:
            what = f"a validation set named {name!r}" if name else "the unnamed validation set"
            raise ConfigurationError(
                f"add_valid was already called for {what} in this setup; give each further "
                "set its own name=..."
            )
        _dataset_size(dataset, "validation")
        self._valid[key] = (dataset, self._check_params(params))

    def add_test(self, dataset: Dataset[Any], params: DataLoaderParams | None = None) -> None:
        """Add the test dataset (read in order, sharded without padding).

        Raises:
            ConfigurationError: a test dataset was already added, or a bad argument.
        """
        if self._test is not None:
            raise ConfigurationError("add_test was already called in this setup; call it once")
        _dataset_size(dataset, "test")
        self._test = (dataset, self._check_params(params))

    def add_predict(self, dataset: Dataset[Any], params: DataLoaderParams | None = None) -> None:
        """Add the dataset of :meth:`Trainer.predict` (read in order, sharded without padding).

        Raises:
            ConfigurationError: a prediction dataset was already added, or a bad argument
                (``drop_last`` would leave samples without a prediction).
        """
        if self._predict is not None:
            raise ConfigurationError("add_predict was already called in this setup; call it once")
        _dataset_size(dataset, "prediction")
        params = self._check_params(params)
        if params.drop_last:
            raise ConfigurationError(
                "add_predict needs drop_last=False: every sample gets a prediction"
            )
        self._predict = (dataset, params)

    @staticmethod
    def _check_params(params: DataLoaderParams | None) -> DataLoaderParams:
        if params is None:
            return DataLoaderParams()
        if not isinstance(params, DataLoaderParams):
            raise ConfigurationError(
                f"params must be a DataLoaderParams, got {type(params).__name__}"
            )
        return params

    def _clear_datasets(self) -> None:
        self._phases = []
        self._valid = {}
        self._test = self._predict = None
        self._drop_loaders()

    # --- what the trainer calls ---------------------------------------------------------------

    def configure(self, *, rank: int, world_size: int, seed: int) -> None:
        """Say which rank of how many this process is, and the run's seed.

        The seed is the default for loaders whose ``DataLoaderParams.seed`` is ``None``.
        Loaders built before are rebuilt on their next request.

        Raises:
            ConfigurationError: ``world_size < 1``, ``rank`` outside ``[0, world_size)`` or a
                seed outside ``[0, 2**64 - 1]``.
        """
        world_size = _check_int("world_size", world_size, 1)
        rank = _check_int("rank", rank, 0, world_size - 1)
        seed = _check_int("seed", seed, 0, _MAX_SEED)
        if (rank, world_size, seed) != (self._rank, self._world_size, self._seed):
            self._rank, self._world_size, self._seed = rank, world_size, seed
            self._drop_loaders()

    @property
    def rank(self) -> int:
        """This process's rank, as given to :meth:`configure`."""
        return self._rank

    @property
    def world_size(self) -> int:
        """How many ranks share the data, as given to :meth:`configure`."""
        return self._world_size

    @property
    def position(self) -> SamplePosition:
        """The training position: the one object the training samplers read and write."""
        return self._position

    @property
    def epoch(self) -> int:
        """The current training epoch."""
        return self._position.epoch

    @property
    def consumed(self) -> int:
        """Training samples of this epoch consumed so far, over all ranks."""
        return self._position.consumed

    @property
    def phase(self) -> int:
        """The index of the current curriculum phase (the ``add_train`` call, from 0)."""
        self._advance_phase()
        return self._phase

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` at position 0; a no-op if ``epoch`` is the current epoch.

        A phase with ``epochs`` set hands over to the next phase here.

        Raises:
            ConfigurationError: ``epoch`` is not a non-negative int.
        """
        epoch = _check_int("epoch", epoch, 0)
        if epoch == self._position.epoch:
            return
        self._move_to(epoch, 0)
        self._advance_phase()

    def replace_train_params(self, **changes: Any) -> None:
        """Change loader settings of every training phase after :meth:`setup`.

        For tools that run a user's data module with other settings (``helios verify-resume
        --workers K`` sets ``num_workers``). The sample order and the batch seeds do not depend
        on loader settings other than ``batch_size``, ``drop_last``, ``shuffle`` and ``seed``.

        Args:
            changes: ``DataLoaderParams`` fields and their new values.

        Raises:
            ConfigurationError: no training data was added, or a field or value is invalid.
        """
        if not self._phases:
            raise ConfigurationError("replace_train_params needs training data: call setup() first")
        fields = {field.name for field in dataclasses.fields(DataLoaderParams)}
        unknown = sorted(changes.keys() - fields)
        if unknown:
            raise ConfigurationError(
                f"replace_train_params got unknown DataLoaderParams fields {unknown}"
            )
        self._phases = [
            dataclasses.replace(phase, params=dataclasses.replace(phase.params, **changes))
            for phase in self._phases
        ]
        self._drop_train_loader()

    def set_phase(self, phase: int) -> None:
        """Switch the training data to curriculum ``phase`` from the start of the current epoch.

        Raises:
            ConfigurationError: no such phase.
        """
        if not self._phases:
            raise ConfigurationError(
                f"set_phase({phase!r}) needs training phases, but add_train was not called yet"
            )
        _check_int("phase", phase, 0, len(self._phases) - 1)
        if phase != self._phase:
            self._phase, self._phase_start_epoch = phase, self._position.epoch
            self._drop_train_loader()
            self._position.move_to(self._position.epoch, 0)
            self._restored_dataset_size = None

    def train_dataloader(self) -> ResumableDataLoader[Any] | None:
        """The current phase's training batches of this epoch, from the saved position on.

        The same loader object is returned until the configuration or the phase changes (so
        persistent workers live across epochs). ``len()`` of it is the number of batches left
        on this rank; iterating it advances the position by what the loop received.

        Raises:
            ResumeError: the restored state was saved for a dataset of another size.
        """
        if not self._phases:
            return None
        self._advance_phase()
        if self._train_loader is None:
            if self._phase >= len(self._phases):
                raise ResumeError(
                    f"the restored phase {self._phase} does not exist: setup added "
                    f"{len(self._phases)} training phase(s)"
                )
            phase = self._phases[self._phase]
            sampler = self._make_sampler(
                phase.dataset, phase.params, drop_last=phase.params.drop_last, padding=True
            )
            saved_size = self._restored_dataset_size
            position = self._position
            if saved_size not in (None, -1, sampler.dataset_size) or (
                position.consumed > sampler.dataset_size
            ):
                raise ResumeError(
                    f"the training state was saved for a dataset of {saved_size} samples "
                    f"({position.consumed} consumed in epoch {position.epoch}); phase "
                    f"{self._phase}'s dataset holds {sampler.dataset_size}: the order would "
                    "differ"
                )
            self._restored_dataset_size = None
            sampler.use_position(position)
            self._train_loader = ResumableDataLoader.from_params(
                phase.dataset, sampler, phase.params
            )
        return self._train_loader

    def valid_dataloader(self) -> DataLoader[Any] | None:
        """The first validation set's batches of this rank, in order; ``None`` without one.

        The first set is the first :meth:`add_valid` call's; :meth:`valid_dataloaders` gives
        every set.
        """
        if not self._valid:
            return None
        return self._valid_loader(next(iter(self._valid)))

    def valid_dataloaders(self) -> dict[str, Any]:
        """Every validation set's batches of this rank, by name, in the order they were added.

        The unnamed set's key is ``""``. Empty without validation data. A subclass that
        overrides :meth:`valid_dataloader` (and not this) has its override used for the first set.
        """
        names = list(self._valid)
        if type(self).valid_dataloader is DataModule.valid_dataloader:
            return {name: self._valid_loader(name) for name in names}
        first = self.valid_dataloader()  # the subclass's own loader for the first set
        loaders: dict[str, Any] = {} if first is None else {names[0] if names else "": first}
        return loaders | {name: self._valid_loader(name) for name in names[1:]}

    def _valid_loader(self, name: str) -> DataLoader[Any]:
        loader = self._valid_loaders.get(name)
        if loader is None:
            loader = self._valid_loaders[name] = self._evaluation_loader(*self._valid[name])
        return loader

    def test_dataloader(self) -> DataLoader[Any] | None:
        """The test batches of this rank, in order; ``None`` without test data."""
        if self._test is None:
            return None
        if self._test_loader is None:
            self._test_loader = self._evaluation_loader(*self._test)
        return self._test_loader

    def predict_dataloader(self) -> DataLoader[Any] | None:
        """The prediction batches of this rank, in order; ``None`` without prediction data.

        Its ``batch_sampler`` yields ``(seed, dataset indices)`` per batch, which
        ``Trainer.predict`` uses to put every rank's outputs back in dataset order.
        """
        if self._predict is None:
            return None
        if self._predict_loader is None:
            self._predict_loader = self._evaluation_loader(*self._predict)
        return self._predict_loader

    def _evaluation_loader(
        self, dataset: Dataset[Any], params: DataLoaderParams
    ) -> DataLoader[Any]:
        # Never padded: a padded sample would be evaluated twice and skew the metrics.
        sampler = self._make_sampler(dataset, params, drop_last=False, padding=False)
        keys = BatchKeys(sampler, params.batch_size, drop_last=params.drop_last)
        return build_torch_loader(dataset, keys, params)

    def _make_sampler(
        self, dataset: Dataset[Any], params: DataLoaderParams, *, drop_last: bool, padding: bool
    ) -> ResumableSampler:
        factory = SAMPLER_REGISTRY.get(params.sampler)
        sampler = factory(
            _dataset_size(dataset, "given"),
            shuffle=params.shuffle,
            seed=self._seed if params.seed is None else params.seed,
            num_replicas=self._world_size,
            rank=self._rank,
            drop_last=drop_last,
            padding=padding,
        )
        if not isinstance(sampler, ResumableSampler):
            raise ConfigurationError(
                f"the sampler {params.sampler!r} made a {type(sampler).__name__}; expected a "
                "ResumableSampler"
            )
        return sampler

    # --- position bookkeeping -----------------------------------------------------------------

    def _move_to(self, epoch: int, consumed: int) -> None:
        """Move the training position (through the live sampler, which checks and normalises)."""
        if self._train_loader is not None:
            self._train_loader.sampler.set_position(epoch, consumed)
        else:
            self._position.move_to(epoch, consumed)

    def _drop_train_loader(self) -> None:
        """Forget the training loader; one still held elsewhere keeps the position it had."""
        if self._train_loader is not None:
            self._train_loader = None
            dropped = self._position
            self._position = SamplePosition(dropped.epoch, dropped.consumed)

    def _drop_loaders(self) -> None:
        self._drop_train_loader()
        self._valid_loaders = {}
        self._test_loader = self._predict_loader = None

    def _advance_phase(self) -> None:
        """Hand over to the next phase(s) whose predecessor has run its ``epochs``."""
        while self._phase + 1 < len(self._phases):
            epochs = self._phases[self._phase].epochs
            if epochs is None or self._position.epoch < self._phase_start_epoch + epochs:
                return
            self._phase_start_epoch += epochs
            self._phase += 1
            self._drop_train_loader()
            self._restored_dataset_size = None

    # --- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The training position: epoch, global samples consumed, curriculum phase.

        Returns:
            A dict of ints, safe for ``torch.load(weights_only=True)``. ``world_size`` and
            ``dataset_size`` are recorded for checks and logs; resuming at another world size is
            exact.
        """
        self._advance_phase()
        size = (
            _dataset_size(self._phases[self._phase].dataset, "training")
            if self._phase < len(self._phases)
            else -1
        )
        return {
            "version": _STATE_VERSION,
            "epoch": self._position.epoch,
            "consumed": self._position.consumed,
            "phase": self._phase,
            "phase_start_epoch": self._phase_start_epoch,
            "world_size": self._world_size,
            "dataset_size": size,
            "batch_size": (
                self._phases[self._phase].params.batch_size
                if self._phase < len(self._phases)
                else -1
            ),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output, at this module's rank and world size.

        Raises:
            ResumeError: the state is malformed, or names a phase or a dataset size that the
                datasets added in :meth:`setup` do not have.
        """
        expected = {"version", "epoch", "consumed", "phase", "phase_start_epoch"}
        missing = expected - state_dict.keys()
        if missing:
            raise ResumeError(
                f"DataModule state is missing {sorted(missing)}; got {sorted(state_dict)}"
            )
        if state_dict["version"] != _STATE_VERSION:
            raise ResumeError(
                f"DataModule state has version {state_dict['version']!r}; expected {_STATE_VERSION}"
            )
        try:
            epoch = _check_int("epoch", state_dict["epoch"], 0)
            consumed = _check_int("consumed", state_dict["consumed"], 0)
            phase = _check_int("phase", state_dict["phase"], 0)
            phase_start = _check_int("phase_start_epoch", state_dict["phase_start_epoch"], 0)
        except ConfigurationError as error:
            raise ResumeError(f"DataModule state is malformed: {error}") from error
        if self._phases:
            if phase >= len(self._phases):
                raise ResumeError(
                    f"the saved phase {phase} does not exist: setup added "
                    f"{len(self._phases)} training phase(s)"
                )
            size = _dataset_size(self._phases[phase].dataset, "training")
            saved = state_dict.get("dataset_size", -1)
            if saved not in (-1, size):
                raise ResumeError(
                    f"the training state was saved for a dataset of {saved} samples (phase "
                    f"{phase}); this one holds {size}: the order would differ"
                )
            batch_size = self._phases[phase].params.batch_size
            saved_batch = state_dict.get("batch_size", -1)
            if saved_batch not in (-1, batch_size):
                raise ResumeError(
                    f"the training state was saved with batch_size={saved_batch} (phase "
                    f"{phase}); this DataModule has batch_size={batch_size}: the positions of "
                    f"the epoch would not line up. Resume with batch_size={saved_batch}, or "
                    "start a fresh run"
                )
        if phase != self._phase:
            self._drop_train_loader()
        # Checked above when setup already ran; otherwise when the training loader is built.
        saved_size = state_dict.get("dataset_size", -1)
        deferred = not self._phases and isinstance(saved_size, int)
        self._restored_dataset_size = saved_size if deferred else None
        self._phase, self._phase_start_epoch = phase, phase_start
        self._move_to(epoch, consumed)
