"""FSDP2 and HSDP: the model's networks sharded over the processes with ``fully_shard``.

``Trainer(strategy="fsdp")`` (or an :class:`FSDP` object) shards every network with trainable
parameters over a :class:`~torch.distributed.device_mesh.DeviceMesh`: 1-D over all processes
(FSDP), or 2-D ``(replicate, shard)`` for HSDP, which shards inside a group of processes (a
node) and replicates across groups. Nothing here is home-made: ``fully_shard`` shards, DTensor
holds the shards, and ``torch.distributed.checkpoint.state_dict`` gathers and scatters state.

Order of set-up, and why: ``Model.setup`` creates networks *and* optimizers, as it always has.
``fully_shard`` then replaces each network's parameters by DTensor parameters, so
:class:`ShardedModel` re-binds every optimizer's parameter groups, in place, from each old
parameter to its sharded successor (matched by name) before the optimizer has any state. The
user's ``setup`` stays plain PyTorch.

Checkpoints: with a :class:`~helios.core.ShardedCheckpointStore` (the default store is one)
every rank writes its own shards through DCP (:meth:`ShardedModel.local_state_dict`); with any
other store the full state is gathered to global rank 0 (:meth:`ShardedModel.gather`) and
written as one file. Either way a checkpoint read in one process has the layout of an unsharded
run (``Model.state_dict``: full tensors, optimizer state keyed by parameter index; see
:mod:`helios.trainer._checkpoint`), so it resumes under DDP, on one process or on another
number of processes -- :meth:`ShardedModel.load_state_dict` shards it again -- and ``test`` /
``export`` / ``helios export`` read it as any other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)

from helios.core import ConfigurationError, DistributedContext, Model, ResumeError

__all__ = ["FSDP", "STRATEGIES", "ShardedModel", "resolve_strategy", "sharding_units"]

STRATEGIES = ("auto", "ddp", "fsdp")


@dataclasses.dataclass(frozen=True)
class FSDP:
    """Settings of ``Trainer(strategy=FSDP(...))``; ``strategy="fsdp"`` is ``FSDP()``.

    Attributes:
        reshard_after_forward: free each unit's gathered parameters after its forward pass and
            gather them again for backward (less memory, one more all-gather); ``False`` keeps
            them until backward.
        cpu_offload: keep the sharded parameters, gradients and optimizer state in CPU memory
            (``CPUOffloadPolicy``); only meaningful with GPUs.
        replicate: HSDP: the number of replica groups. The processes form a 2-D mesh
            ``(replicate, world_size // replicate)``: each network is sharded inside a group and
            replicated across groups (on several nodes: ``replicate`` = the number of nodes, so
            the all-gathers stay inside a node). ``1`` (default) shards over every process.

    Raises:
        ConfigurationError: a value of the wrong type or out of range.
    """

    reshard_after_forward: bool = True
    cpu_offload: bool = False
    replicate: int = 1

    def __post_init__(self) -> None:
        """Check each value."""
        for name in ("reshard_after_forward", "cpu_offload"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigurationError(f"FSDP {name} must be True or False, got {value!r}")
        replicate = self.replicate
        if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 1:
            raise ConfigurationError(
                f"FSDP replicate must be a positive int (the number of replica groups), "
                f"got {replicate!r}"
            )


def resolve_strategy(strategy: object) -> FSDP | None:
    """The FSDP settings of a ``strategy`` argument, ``None`` for DDP (``"auto"``, ``"ddp"``).

    Raises:
        ConfigurationError: neither one of :data:`STRATEGIES` nor an :class:`FSDP`.
    """
    if isinstance(strategy, FSDP):
        return strategy
    if strategy == "fsdp":
        return FSDP()
    if isinstance(strategy, str) and strategy in ("auto", "ddp"):
        return None
    raise ConfigurationError(
        f"strategy must be one of {STRATEGIES} or a helios.trainer.FSDP(...), got {strategy!r}"
    )


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def sharding_units(network: nn.Module, unit_types: tuple[type[nn.Module], ...]) -> list[nn.Module]:
    """The submodules of ``network`` sharded as units of their own, innermost first.

    With ``unit_types`` (``Model.shard_modules``): every submodule of those classes. Without:
    each direct child with trainable parameters. The root is sharded after them (by the caller)
    and holds whatever parameters no unit does.
    """
    if unit_types:
        found = [m for m in network.modules() if m is not network and isinstance(m, unit_types)]
        return list(reversed(found))  # pre-order reversed: an inner unit before its outer one
    return [child for child in network.children() if _trainable(child)]


def _mesh(context: DistributedContext, fsdp: FSDP) -> DeviceMesh:
    world, replicate = context.world_size, fsdp.replicate
    device_type = context.device.type
    if replicate == 1:
        return init_device_mesh(device_type, (world,), mesh_dim_names=("shard",))
    if world % replicate:
        raise ConfigurationError(
            f"FSDP replicate={replicate} does not divide the {world} processes of this run; "
            "expected the number of replica groups (nodes), a divisor of the world size"
        )
    return init_device_mesh(
        device_type, (replicate, world // replicate), mesh_dim_names=("replicate", "shard")
    )


def _mixed_precision(precision: str) -> MixedPrecisionPolicy:
    """bf16: bfloat16 parameters in forward and backward, gradients reduced in float32."""
    if precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


class ShardedModel:
    """A model whose trainable networks are sharded with ``fully_shard``; its checkpoint part.

    Made in every process, after ``Model.setup`` and ``Model.to(device)``, before anything reads
    the optimizers. As a checkpoint part it speaks the layout of ``Model.state_dict``, gathered:
    :meth:`gather` (collective, every rank) collects the full state on global rank 0, where
    :meth:`state_dict` returns it; :meth:`load_state_dict` (collective) shards a full state
    back.

    Args:
        model: the set-up model, on its device.
        context: the process group (more than one process).
        fsdp: the settings.
        precision: the trainer's precision (``"bf16"`` becomes a ``MixedPrecisionPolicy``).
        logger: where the sharding plan is reported.
    """

    def __init__(
        self,
        model: Model,
        context: DistributedContext,
        fsdp: FSDP,
        precision: str,
        logger: logging.Logger,
    ) -> None:
        self.model, self.context = model, context
        self.mesh = _mesh(context, fsdp)
        offload = CPUOffloadPolicy() if fsdp.cpu_offload and context.device.type != "cpu" else None
        options: dict[str, Any] = {
            "mesh": self.mesh,
            "reshard_after_forward": fsdp.reshard_after_forward,
            "mp_policy": _mixed_precision(precision),
            "offload_policy": offload or OffloadPolicy(),
        }
        unit_types = tuple(type(model).shard_modules)
        before = {id(p): (name, fqn) for name, fqn, p in self._named_parameters()}
        self.sharded: dict[str, nn.Module] = {}
        for name, network in model.networks().items():
            if not _trainable(network):
                continue  # a frozen network (EMA copy, feature extractor) stays whole
            units = sharding_units(network, unit_types)
            for unit in units:
                fully_shard(unit, **options)
            fully_shard(network, **options)
            self.sharded[name] = network
            logger.info(
                "FSDP: network %r sharded over mesh %s in %d unit(s) and its root",
                name,
                tuple(self.mesh.shape),
                len(units),
            )
        self._rebind_optimizers(before)
        self.container = nn.ModuleDict(model.networks())
        self._gathered: dict[str, Any] | None = None

    def _named_parameters(self) -> Iterator[tuple[str, str, nn.Parameter]]:
        for name, network in self.model.networks().items():
            for fqn, parameter in network.named_parameters():
                yield name, fqn, parameter

    def _rebind_optimizers(self, before: Mapping[int, tuple[str, str]]) -> None:
        """Point every optimizer at the sharded parameters that replaced the ones it was given."""
        after = {(name, fqn): p for name, fqn, p in self._named_parameters()}
        for name, optimizer in self.model.optimizers().items():
            if optimizer.state:
                raise ConfigurationError(
                    f"optimizer {name!r} already has state after setup(); under "
                    "strategy='fsdp' the trainer shards the networks after setup() and "
                    "re-binds the optimizers, which must not have stepped yet"
                )
            for group in optimizer.param_groups:
                group["params"][:] = [
                    after.get(before[id(p)], p) if id(p) in before else p for p in group["params"]
                ]

    # ---- training ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def no_sync(self, network: nn.Module) -> Iterator[None]:
        """Backward without the gradient reduce-scatter (inside an accumulation window)."""
        if not isinstance(network, FSDPModule):
            yield
            return
        network.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            network.set_requires_gradient_sync(True)

    # ---- the checkpoint part -----------------------------------------------------------------

    def _fqns(self, optimizer: torch.optim.Optimizer) -> list[str]:
        """The container's name of each parameter of ``optimizer``, in its state-dict order."""
        names = {id(p): fqn for fqn, p in self.container.named_parameters()}
        found: list[str] = []
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if id(parameter) not in names:
                    raise ConfigurationError(
                        "under strategy='fsdp' every optimized parameter must belong to one of "
                        "the model's networks; an optimizer holds one that does not"
                    )
                found.append(names[id(parameter)])
        return found

    def gather(self) -> None:
        """Collect the full state on global rank 0 (collective: every rank calls it)."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        networks = {
            name: get_model_state_dict(network, options=options)
            for name, network in self.model.networks().items()
        }
        optimizers = {}
        for name, optimizer in self.model.optimizers().items():
            by_name: dict[str, Any] = dict(
                get_optimizer_state_dict(self.container, optimizer, options=options)
            )
            index = {fqn: i for i, fqn in enumerate(self._fqns(optimizer))}
            optimizers[name] = {
                "state": {index[fqn]: value for fqn, value in by_name.get("state", {}).items()},
                "param_groups": [
                    {**group, "params": [index[fqn] for fqn in group["params"]]}
                    for group in by_name.get("param_groups", [])
                ],
            }
        if self.context.is_main_process:
            state = self.model.state_dict()  # schedulers, scalers, extra: whole on every rank
            state["networks"], state["optimizers"] = networks, optimizers
            self._gathered = state

    def local_state_dict(self) -> dict[str, Any]:
        """This rank's share of the model state, for a sharded (DCP) save.

        The layout of ``Model.state_dict`` with the networks' DTensor shards and each
        optimizer's state as ``get_optimizer_state_dict`` gives it: keyed by parameter name, so
        DCP can reshard it for another mesh.
        """
        state = self.model.state_dict()
        state["networks"] = {
            name: get_model_state_dict(network) for name, network in self.model.networks().items()
        }
        state["optimizers"] = {
            name: dict(get_optimizer_state_dict(self.container, optimizer))
            for name, optimizer in self.model.optimizers().items()
        }
        return state

    def state_dict(self) -> dict[str, Any]:
        """The full state :meth:`gather` collected (on global rank 0)."""
        if self._gathered is None:
            raise RuntimeError("ShardedModel.state_dict() before gather() on global rank 0")
        state, self._gathered = self._gathered, None
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Shard a full model state (every rank holds it) into the networks and optimizers.

        Raises:
            ResumeError: the state names other networks or optimizers, or a network's
                parameters do not fit.
        """
        groups: dict[str, dict[str, Any]] = {
            "networks": self.model.networks(),
            "optimizers": self.model.optimizers(),
        }
        for group, current in groups.items():
            saved = state.get(group)
            if not isinstance(saved, dict) or saved.keys() != current.keys():
                found = sorted(saved) if isinstance(saved, dict) else saved
                raise ResumeError(
                    f"{type(self.model).__name__} has {group} {sorted(current)} but the "
                    f"checkpoint holds {found}; was setup() changed since it was written?"
                )
        own = self.model.state_dict()  # the rest (schedulers, scalers, extra) loads as ever
        self.model.load_state_dict(
            {**state, "networks": own["networks"], "optimizers": own["optimizers"]}
        )
        options = StateDictOptions(full_state_dict=True)
        for name, network in groups["networks"].items():
            try:
                set_model_state_dict(network, state["networks"][name], options=options)
            except (RuntimeError, KeyError, ValueError) as error:
                raise ResumeError(
                    f"network {name!r} does not fit its saved state: {error}"
                ) from error
        for name, optimizer in groups["optimizers"].items():
            saved = state["optimizers"][name]
            fqns = self._fqns(optimizer)
            by_name: Any = {
                "state": {fqns[int(i)]: value for i, value in saved["state"].items()},
                "param_groups": [
                    {**group, "params": [fqns[int(i)] for i in group["params"]]}
                    for group in saved["param_groups"]
                ],
            }
            set_optimizer_state_dict(self.container, optimizer, by_name, options=options)
            # As Optimizer.load_state_dict: the saved settings as saved (betas a tuple, not the
            # list the state-dict round trip makes of it).
            for group, saved_group in zip(
                optimizer.param_groups, saved["param_groups"], strict=True
            ):
                group.update({key: value for key, value in saved_group.items() if key != "params"})
