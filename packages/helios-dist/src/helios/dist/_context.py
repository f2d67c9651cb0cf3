"""``TorchDistributed``: the process group of a training process, on ``torch.distributed``.

It implements :class:`helios.core.DistributedContext`. :meth:`TorchDistributed.from_environment`
reads the launcher (:func:`~helios.dist.detect_launcher`), picks the backend (NCCL for CUDA,
Gloo on the CPU), pins the process to ``cuda:LOCAL_RANK`` and starts the process group with a
timeout, so that a rank that fails or never arrives turns into an error instead of a hang.
Without a launcher it is a group of one: no process group, every collective returns its input,
and the trainer keeps one code path.

The group it starts is its own to destroy, on every way out: :meth:`TorchDistributed.close` (or
leaving the ``with`` block, normally or by an exception), interpreter exit, and SIGTERM, which
becomes ``SystemExit`` while no one else handles it so that ``with`` blocks and ``finally``
clauses run.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from types import FrameType, TracebackType
from typing import Any, Literal, TypeVar, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from helios.core import ConfigurationError, HeliosError, unwrap
from helios.dist._launcher import LaunchInfo, detect_launcher

__all__ = ["BACKEND_VARIABLE", "CollectiveError", "TorchDistributed", "first_failure_time"]

T = TypeVar("T")

_log = logging.getLogger(__name__)
_BACKENDS = ("auto", "gloo", "nccl")
_DEFAULT_TIMEOUT = timedelta(minutes=10)
_SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
#: The backend :func:`helios.dist.spawn` asks its children to use when they say ``"auto"``.
BACKEND_VARIABLE = "HELIOS_DIST_BACKEND"

# When this process first saw an exception leave a ``TorchDistributed`` block. A rank that
# fails makes the ranks waiting for it fail a moment later; :func:`helios.dist.spawn` reports the
# earliest failure as the cause, and this clock is what orders them.
_first_failure: float | None = None


def first_failure_time() -> float | None:
    """When an exception first left a ``TorchDistributed`` block in this process (wall clock)."""
    return _first_failure


# What backends say when the peer's end of a connection went away: the process died or left.
_PEER_GONE = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "socket closed",
    "remote process exited",
    "econnreset",
)


def _what_happened(error: BaseException, timeout: timedelta) -> str:
    """The likely story behind a failed collective, from the backend's error text."""
    text = str(error).lower()
    if any(phrase in text for phrase in _PEER_GONE):
        return (
            "another rank's process died or left the group (its connection closed): it failed, "
            "was killed, or stopped without this rank"
        )
    if "timed out" in text or "timeout" in text:
        return (
            f"another rank did not arrive within {timeout}: it is stuck, much slower, or took a "
            "different path (a stop or an exception on that rank only)"
        )
    return "another rank has probably failed or stopped"


class CollectiveError(HeliosError):
    """A collective did not complete: another rank failed, left, or missed the timeout.

    The message names this process's rank and node, the collective and the timeout, and the
    original ``torch.distributed`` error is chained as ``__cause__``.
    """


def _resolve_device(device: str | torch.device | None, launch: LaunchInfo) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        wanted = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigurationError(f"device must be None, 'cpu' or 'cuda', got {device!r}") from None
    if wanted.type == "cpu":
        return torch.device("cpu")
    if wanted.type != "cuda":
        raise ConfigurationError(f"device must be None, 'cpu' or 'cuda', got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigurationError(f"device={device!r} was asked for, but CUDA is not available")
    index = launch.local_rank if wanted.index is None else wanted.index
    if index >= torch.cuda.device_count():
        raise ConfigurationError(
            f"this process needs cuda:{index} (LOCAL_RANK={launch.local_rank}), but only "
            f"{torch.cuda.device_count()} CUDA device(s) are visible"
        )
    return torch.device("cuda", index)


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in _BACKENDS:
        raise ConfigurationError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        if device.type != "cuda":
            raise ConfigurationError(
                f"backend='nccl' needs a CUDA device, but the device is {device}; "
                "use backend='gloo' on the CPU"
            )
        if not dist.is_nccl_available():
            raise ConfigurationError("backend='nccl' was asked for, but this torch has no NCCL")
    return backend


def _checked_backend(backend: str, timeout: timedelta) -> str:
    """The backend asked for (``auto`` may be set by :func:`helios.dist.spawn`), checked."""
    if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
        raise ConfigurationError(f"timeout must be a positive timedelta, got {timeout!r}")
    if backend not in _BACKENDS:
        raise ConfigurationError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "auto" and os.environ.get(BACKEND_VARIABLE):
        backend = os.environ[BACKEND_VARIABLE]
        if backend not in _BACKENDS:
            raise ConfigurationError(
                f"environment variable {BACKEND_VARIABLE}={backend!r} must be one of {_BACKENDS}"
            )
    return backend


class TorchDistributed:
    """The process group a training process belongs to, and the collectives the trainer needs.

    Build it with :meth:`from_environment`; use it as a context manager (or call :meth:`close`)
    so the process group it started is destroyed. It satisfies
    :class:`helios.core.DistributedContext`.

    Example:
        >>> with TorchDistributed.from_environment() as ctx:
        ...     net = ctx.wrap(net)
        ...     metrics = ctx.all_reduce_mean({"loss": loss})
    """

    def __init__(
        self,
        launch: LaunchInfo | None = None,
        *,
        device: torch.device | None = None,
        backend: str | None = None,
        timeout: timedelta = _DEFAULT_TIMEOUT,
        owns_group: bool = False,
    ) -> None:
        """Describe a process's place in a group that is already running (or a single process).

        Prefer :meth:`from_environment`, which also starts the group.

        Args:
            launch: this process's ranks; a single process when ``None``.
            device: the device this process trains on; the CPU when ``None``.
            backend: the running group's backend (``None`` for a single process).
            timeout: the group's timeout, quoted in error messages.
            owns_group: whether :meth:`close` must destroy the default process group.
        """
        self._launch = launch if launch is not None else LaunchInfo()
        self._device = device if device is not None else torch.device("cpu")
        self._backend = backend
        self._timeout = timeout
        self._owns_group = owns_group
        self._closed = False
        self._previous_sigterm: Any = None
        self._installed_sigterm = False
        if owns_group:
            atexit.register(self.close)

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def from_environment(
        cls,
        backend: str = "auto",
        timeout: timedelta = _DEFAULT_TIMEOUT,
        device: str | torch.device | None = None,
    ) -> TorchDistributed:
        """Join the job this process was launched into, or stand alone without a launcher.

        Under torchrun (and in :func:`helios.dist.spawn`'s processes) the group starts through
        ``env://``; under SLURM through ``tcp://`` on the first node of the job. A group already
        started by the caller is adopted (and left for the caller to destroy).

        Args:
            backend: ``"auto"`` (NCCL with CUDA, Gloo on the CPU; in :func:`helios.dist.spawn`'s
                children, the backend given to ``spawn``), ``"gloo"`` or ``"nccl"``.
            timeout: how long a collective (and the start-up rendezvous) may wait for the other
                ranks before it fails.
            device: ``None`` (CUDA when available, else the CPU), ``"cpu"`` or ``"cuda"``; a
                CUDA process uses ``cuda:LOCAL_RANK``.

        Returns:
            The context; the process group is running whenever a launcher started the process.

        Raises:
            ConfigurationError: an unknown backend or device, NCCL without CUDA, too few GPUs
                for the local rank, or inconsistent launcher variables.
            CollectiveError: the rendezvous with the other ranks failed or timed out.
        """
        backend = _checked_backend(backend, timeout)
        launch = detect_launcher()
        if dist.is_available() and dist.is_initialized():
            return cls._adopt(launch, device, timeout)
        resolved = _resolve_device(device, launch)
        chosen = _resolve_backend(backend, resolved)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        if not launch.is_launched:
            return cls(launch, device=resolved, timeout=timeout)
        if not dist.is_available():
            raise ConfigurationError(
                f"the launcher asks for {launch.world_size} processes, but this torch was built "
                "without torch.distributed"
            )
        return cls._start_group(launch, resolved, chosen, timeout)

    @classmethod
    def _adopt(
        cls, launch: LaunchInfo, device: str | torch.device | None, timeout: timedelta
    ) -> TorchDistributed:
        """A context over the process group the caller already started (and will destroy)."""
        launch = LaunchInfo(
            kind=launch.kind,
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=launch.local_rank,
            local_world_size=min(launch.local_world_size, dist.get_world_size()),
            node_rank=launch.node_rank,
            master_addr=launch.master_addr,
            master_port=launch.master_port,
        )
        resolved = _resolve_device(device, launch)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        return cls(
            launch,
            device=resolved,
            backend=str(dist.get_backend()),
            timeout=timeout,
            owns_group=False,
        )

    @classmethod
    def _start_group(
        cls, launch: LaunchInfo, resolved: torch.device, chosen: str, timeout: timedelta
    ) -> TorchDistributed:
        """Start the process group the launcher describes, and own it."""
        if launch.kind == "slurm":
            init_method = f"tcp://{launch.master_addr}:{launch.master_port}"
            extra: dict[str, Any] = {"rank": launch.rank, "world_size": launch.world_size}
        else:
            init_method, extra = "env://", {}
        if chosen == "nccl":
            extra["device_id"] = resolved
        try:
            dist.init_process_group(chosen, init_method=init_method, timeout=timeout, **extra)
        except (RuntimeError, ValueError) as error:
            raise CollectiveError(
                f"rank {launch.rank} of {launch.world_size} (node {launch.node_rank}) could not "
                f"start the {chosen} process group through {init_method} "
                f"({launch.master_addr}:{launch.master_port}) within {timeout}: {error}"
            ) from error
        context = cls(launch, device=resolved, backend=chosen, timeout=timeout, owns_group=True)
        context._install_sigterm_handler()
        return context

    # ---- where this process is -----------------------------------------------------------------

    @property
    def launch(self) -> LaunchInfo:
        """The launcher's description of this process."""
        return self._launch

    @property
    def rank(self) -> int:
        """This process's global rank."""
        return self._launch.rank

    @property
    def local_rank(self) -> int:
        """This process's rank on its node."""
        return self._launch.local_rank

    @property
    def node_rank(self) -> int:
        """The index of this process's node."""
        return self._launch.node_rank

    @property
    def world_size(self) -> int:
        """How many processes train together."""
        return self._launch.world_size

    @property
    def local_world_size(self) -> int:
        """How many processes train on this node."""
        return self._launch.local_world_size

    @property
    def device(self) -> torch.device:
        """The device this process trains on (``cuda:LOCAL_RANK`` or ``cpu``)."""
        return self._device

    @property
    def map_location(self) -> torch.device:
        """Where ``torch.load`` should put tensors for this rank: its own device."""
        return self._device

    @property
    def backend(self) -> str | None:
        """The process group's backend (``"nccl"``, ``"gloo"``), ``None`` for one process."""
        return self._backend

    @property
    def timeout(self) -> timedelta:
        """How long a collective waits for the other ranks before it fails."""
        return self._timeout

    @property
    def is_distributed(self) -> bool:
        """Whether there is more than one process."""
        return self._launch.world_size > 1

    @property
    def is_main_process(self) -> bool:
        """Whether this is global rank 0: the one that writes checkpoints, logs and bars."""
        return self._launch.rank == 0

    @property
    def is_local_main_process(self) -> bool:
        """Whether this is local rank 0 on its node."""
        return self._launch.local_rank == 0

    def __repr__(self) -> str:
        """Ranks, device and backend, for logs."""
        return (
            f"TorchDistributed(rank={self.rank}, local_rank={self.local_rank}, "
            f"node_rank={self.node_rank}, world_size={self.world_size}, device={self.device}, "
            f"backend={self.backend!r}, launcher={self._launch.kind!r})"
        )

    # ---- collectives -------------------------------------------------------------------------

    @property
    def _has_group(self) -> bool:
        # A launched job of one process still has a group (and runs real collectives).
        return self._backend is not None

    @property
    def _collective_device(self) -> torch.device:
        # NCCL only moves CUDA tensors; Gloo is happiest with CPU ones.
        return self._device if self._backend == "nccl" else torch.device("cpu")

    @contextlib.contextmanager
    def _collective(self, name: str) -> Iterator[None]:
        if self._closed:
            raise HeliosError(f"{name} on rank {self.rank} after the context was closed")
        try:
            yield
        except RuntimeError as error:
            raise CollectiveError(
                f"{name} failed on rank {self.rank} of {self.world_size} (node {self.node_rank}):"
                f" {_what_happened(error, self._timeout)}. Look for the first error of the other "
                f"ranks. Cause: {error}"
            ) from error

    def barrier(self) -> None:
        """Wait until every process reaches this point."""
        if not self._has_group:
            return
        with self._collective("barrier"):
            dist.barrier()

    def all_reduce_mean(self, metrics: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
        """Average each metric over all processes.

        Every rank must pass the same keys (in any order). All values travel in one float64
        all-reduce.

        Args:
            metrics: numbers or one-element tensors (on any device), by name.

        Returns:
            The means, as Python floats, in the order of ``metrics``.

        Raises:
            ConfigurationError: a value is neither a number nor a one-element tensor.
            CollectiveError: the all-reduce failed or timed out.
        """
        values: dict[str, float] = {}
        for name, value in metrics.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ConfigurationError(
                        f"metric {name!r} must be a number or a one-element tensor, got a tensor "
                        f"of shape {tuple(value.shape)}"
                    )
                values[name] = float(value.detach().reshape(()).item())
            elif isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)
            else:
                raise ConfigurationError(
                    f"metric {name!r} must be a float or a tensor, got {value!r} "
                    f"({type(value).__name__})"
                )
        if not self._has_group or not values:
            return values
        names = sorted(values)
        total = torch.tensor(
            [values[name] for name in names], dtype=torch.float64, device=self._collective_device
        )
        with self._collective(f"all_reduce_mean of {names}"):
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        means = dict(zip(names, (total / self.world_size).tolist(), strict=True))
        return {name: means[name] for name in values}

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Add ``values`` up element-wise over all processes, in one all-reduce.

        For sums and counts that must be exact over every sample (evaluation): each rank passes
        the same shape and dtype; the input is left as it is.

        Args:
            values: a tensor on any device.

        Returns:
            A new tensor of the totals, on ``values``' device.

        Raises:
            ConfigurationError: ``values`` is not a tensor.
            CollectiveError: the all-reduce failed or timed out.
        """
        if not isinstance(values, torch.Tensor):
            raise ConfigurationError(
                f"all_reduce_sum needs a tensor, got {values!r} ({type(values).__name__})"
            )
        if not self._has_group:
            return values.detach().clone()
        total = values.detach().to(self._collective_device, copy=True)
        with self._collective(f"all_reduce_sum of {tuple(values.shape)} values"):
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.to(values.device)

    def _check_rank(self, argument: str, rank: int) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.world_size:
            raise ConfigurationError(
                f"{argument} must be a rank in [0, {self.world_size}), got {rank!r}"
            )

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        """Send a picklable object from rank ``src`` to every process.

        Args:
            obj: the object (only rank ``src``'s is used).
            src: the rank that sends.

        Returns:
            Rank ``src``'s object, on every rank.
        """
        self._check_rank("src", src)
        if not self._has_group:
            return obj
        box: list[Any] = [obj if self.rank == src else None]
        with self._collective(f"broadcast_object from rank {src}"):
            dist.broadcast_object_list(box, src=src, device=self._collective_device)
        return cast(T, box[0])

    def all_gather_object(self, obj: T) -> list[T]:
        """Gather a picklable object from every process, in rank order, on every process."""
        if not self._has_group:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        with self._collective("all_gather_object"):
            dist.all_gather_object(gathered, obj)
        return cast(list[T], gathered)

    def agree(self, flag: bool, mode: Literal["any", "all"] = "any") -> bool:
        """Whether ``flag`` holds on any (or all) processes, the same answer everywhere.

        Use it for decisions every rank must take together (stop, early stop, skip a step), so
        no rank is left waiting in a collective the others never enter.

        Args:
            flag: this rank's vote.
            mode: ``"any"`` (true if one rank says so) or ``"all"`` (true if every rank does).

        Returns:
            The agreed answer.
        """
        if mode not in ("any", "all"):
            raise ConfigurationError(f"mode must be 'any' or 'all', got {mode!r}")
        if not self._has_group:
            return bool(flag)
        vote = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._collective_device)
        operation = dist.ReduceOp.MAX if mode == "any" else dist.ReduceOp.MIN
        with self._collective(f"agree({mode})"):
            dist.all_reduce(vote, op=operation)
        return bool(vote.item())

    # ---- networks ----------------------------------------------------------------------------

    def wrap(self, module: nn.Module, **ddp_options: Any) -> nn.Module:
        """Prepare a network for training here: on this device, in DDP when distributed.

        A network without trainable parameters (a frozen feature extractor, an EMA copy) is
        only moved: DDP has nothing to synchronise for it, and refuses it.

        Args:
            module: the user's network (moved to :attr:`device` in place).
            **ddp_options: passed on to ``DistributedDataParallel`` (``find_unused_parameters``,
                ``static_graph``, ...).

        Returns:
            ``DistributedDataParallel(module, device_ids=[local GPU])`` (``device_ids=None``
            on the CPU) when distributed, else ``module``.
        """
        if isinstance(module, DistributedDataParallel):
            return module
        module = module.to(self._device)
        if not self.is_distributed or not any(p.requires_grad for p in module.parameters()):
            return module
        device_ids = [self._device] if self._device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **ddp_options)

    def unwrap(self, module: nn.Module) -> nn.Module:
        """The user's network inside DDP and ``torch.compile`` wrappers (``helios.core.unwrap``)."""
        return unwrap(module)

    def no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[None]:
        """A context in which backward does not synchronise gradients (accumulation).

        Args:
            module: a network returned by :meth:`wrap`.

        Returns:
            DDP's ``no_sync()`` for a DDP network, a do-nothing context otherwise.
        """
        if isinstance(module, DistributedDataParallel):
            return cast(contextlib.AbstractContextManager[None], module.no_sync())
        return contextlib.nullcontext()

    # ---- the way out -------------------------------------------------------------------------

    def _install_sigterm_handler(self) -> None:
        # Only where nobody else handles SIGTERM (the trainer installs its own to checkpoint
        # and stop), and only from the main thread, where Python allows it.
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def leave(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(_SIGTERM_EXIT_CODE)

        self._previous_sigterm = signal.signal(signal.SIGTERM, leave)
        self._installed_sigterm = True

    def close(self) -> None:
        """Leave the process group: destroy it if this context started it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._installed_sigterm and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._installed_sigterm = False
        if self._owns_group:
            atexit.unregister(self.close)
            if dist.is_available() and dist.is_initialized():
                try:
                    dist.destroy_process_group()
                except (RuntimeError, ValueError) as error:  # already torn down by a failure
                    _log.warning(
                        "rank %d: destroying the process group failed: %s", self.rank, error
                    )
            # DDP wrappers hold the group: free the ones no longer used now, so the group's
            # threads stop here rather than during interpreter shutdown (where a Gloo thread
            # that still needs the GIL aborts the process).
            gc.collect()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> TorchDistributed:
        """Use the context in a ``with`` block; leaving it closes the context."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the context, whether the block ended normally or by an exception."""
        global _first_failure  # noqa: PLW0603 - one clock per process, read by spawn's children
        if exc is not None and not isinstance(exc, SystemExit) and _first_failure is None:
            _first_failure = time.time()
        self.close()
