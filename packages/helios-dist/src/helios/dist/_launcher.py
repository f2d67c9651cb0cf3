"""Which launcher started this process, read from the environment alone.

``torchrun`` and SLURM's ``srun`` both start one process per rank and describe its place in the
job through environment variables, each in its own dialect. :func:`detect_launcher` reads either
dialect into one :class:`LaunchInfo`, so the rest of Helios never looks at the environment
again. Nothing here starts a process group: detection is pure and cheap, so the trainer can call
it first to decide whether it must spawn processes itself.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Literal

from helios.core import ConfigurationError

__all__ = ["LaunchInfo", "LauncherKind", "detect_launcher", "expand_nodelist"]

LauncherKind = Literal["torchrun", "slurm", "none"]

# SLURM gives no port: every rank derives the same one from the job id, inside a range that
# avoids both the privileged ports and Linux's default ephemeral range (32768-60999).
_SLURM_PORT_BASE = 15000
_SLURM_PORT_SPAN = 15000
# ``srun`` inside an interactive allocation is a shell, not a training job (Lightning's rule).
_SLURM_INTERACTIVE_NAMES = frozenset({"bash", "interactive", "sh", "zsh"})


@dataclasses.dataclass(frozen=True)
class LaunchInfo:
    """Where this process sits in its job, as its launcher described it.

    Attributes:
        kind: ``"torchrun"`` (also the processes :func:`helios.dist.spawn` starts, which speak
            torchrun's variables), ``"slurm"`` or ``"none"`` (a plain single process).
        rank: the global rank, from 0.
        local_rank: the rank on this node, from 0; the index of this process's GPU.
        world_size: how many processes the job has.
        local_world_size: how many processes run on this node.
        node_rank: the index of this node, from 0.
        master_addr: the host of rank 0's rendezvous store, ``None`` without a launcher.
        master_port: the port of that store, ``None`` without a launcher.
    """

    kind: LauncherKind = "none"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    def __post_init__(self) -> None:
        """Reject positions that cannot exist (a rank outside the world, ...)."""
        if self.world_size < 1:
            raise ConfigurationError(f"world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigurationError(
                f"rank must be in [0, world_size={self.world_size}), got {self.rank}"
            )
        if not 1 <= self.local_world_size <= self.world_size:
            raise ConfigurationError(
                f"local_world_size must be in [1, world_size={self.world_size}], "
                f"got {self.local_world_size}"
            )
        if not 0 <= self.local_rank < self.local_world_size:
            raise ConfigurationError(
                f"local_rank must be in [0, local_world_size={self.local_world_size}), "
                f"got {self.local_rank}"
            )
        if self.node_rank < 0:
            raise ConfigurationError(f"node_rank must be >= 0, got {self.node_rank}")

    @property
    def is_launched(self) -> bool:
        """Whether a launcher (torchrun, SLURM, :func:`helios.dist.spawn`) started this process."""
        return self.kind != "none"


def _int_variable(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise ConfigurationError(f"environment variable {name} is not set, expected an int")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(
            f"environment variable {name}={raw!r} is not an int, expected e.g. {name}=0"
        ) from None


def _torchrun(environ: Mapping[str, str]) -> LaunchInfo:
    rank = _int_variable(environ, "RANK")
    world_size = _int_variable(environ, "WORLD_SIZE")
    local_rank = _int_variable(environ, "LOCAL_RANK", default=0)
    local_world_size = _int_variable(environ, "LOCAL_WORLD_SIZE", default=world_size)
    # torchrun calls the node's index GROUP_RANK; without it, assume equally sized nodes.
    node_rank = _int_variable(environ, "GROUP_RANK", default=rank // local_world_size)
    port = environ.get("MASTER_PORT")
    return LaunchInfo(
        kind="torchrun",
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        local_world_size=local_world_size,
        node_rank=node_rank,
        master_addr=environ.get("MASTER_ADDR"),
        master_port=_int_variable(environ, "MASTER_PORT") if port else None,
    )


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM host list such as ``"gpu[01-03,07],login1"`` into host names.

    Ranges keep their zero padding, and several bracket groups in one name multiply out
    (``"r[1-2]n[1-2]"`` gives ``r1n1, r1n2, r2n1, r2n2``), as ``scontrol show hostnames`` does.

    Args:
        nodelist: the value of ``SLURM_JOB_NODELIST`` (or ``SLURM_NODELIST``).

    Returns:
        The host names, in the order SLURM lists them.

    Raises:
        ConfigurationError: the list is empty or its brackets do not match.
    """
    # Split on the commas that are outside brackets.
    names: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(nodelist):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            names.append(nodelist[start:index])
            start = index + 1
        if depth not in (0, 1):
            raise ConfigurationError(f"SLURM node list {nodelist!r} has unbalanced brackets")
    if depth != 0:
        raise ConfigurationError(f"SLURM node list {nodelist!r} has unbalanced brackets")
    names.append(nodelist[start:])

    hosts: list[str] = []
    for name in (name.strip() for name in names):
        if name:
            hosts.extend(_expand_name(name, nodelist))
    if not hosts:
        raise ConfigurationError(f"SLURM node list {nodelist!r} names no host")
    return hosts


def _expand_name(name: str, nodelist: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", name)
    if match is None:
        return [name]
    head, tail = name[: match.start()], name[match.end() :]
    expanded: list[str] = []
    for part in match.group(1).split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ConfigurationError(
                f"SLURM node list {nodelist!r} has a range {part!r}, expected e.g. 01-04"
            )
        width = len(low)
        for number in range(int(low), int(high or low) + 1):
            expanded.extend(_expand_name(f"{head}{number:0{width}d}{tail}", nodelist))
    return expanded


def _tasks_on_node(tasks_per_node: str, node: int) -> int | None:
    """Read SLURM's compressed ``"2(x3),1"`` (2 tasks on each of 3 nodes, then 1) at ``node``."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            return None
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts[node] if node < len(counts) else None


def _slurm(environ: Mapping[str, str]) -> LaunchInfo:
    rank = _int_variable(environ, "SLURM_PROCID")
    # A step may run fewer tasks than the allocation holds: prefer the step's own count.
    world_size = _int_variable(
        environ, "SLURM_STEP_NUM_TASKS", default=_int_variable(environ, "SLURM_NTASKS")
    )
    local_rank = _int_variable(environ, "SLURM_LOCALID", default=0)
    node_rank = _int_variable(environ, "SLURM_NODEID", default=0)
    local_world_size: int | None = None
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if environ.get(name):
            local_world_size = _tasks_on_node(environ[name], node_rank)
            break
    if local_world_size is None:
        local_world_size = _int_variable(environ, "SLURM_NTASKS_PER_NODE", default=world_size)

    master_addr = environ.get("MASTER_ADDR")
    if not master_addr:
        nodelist = (
            environ.get("SLURM_STEP_NODELIST")
            or environ.get("SLURM_JOB_NODELIST")
            or environ.get("SLURM_NODELIST")
        )
        master_addr = expand_nodelist(nodelist)[0] if nodelist else "127.0.0.1"
    if environ.get("MASTER_PORT"):
        master_port = _int_variable(environ, "MASTER_PORT")
    else:
        job_id = _int_variable(environ, "SLURM_JOB_ID", default=0)
        master_port = _SLURM_PORT_BASE + job_id % _SLURM_PORT_SPAN
    return LaunchInfo(
        kind="slurm",
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        local_world_size=local_world_size,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
    )


def detect_launcher(environ: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read which launcher started this process, and this process's place in the job.

    torchrun (and :func:`helios.dist.spawn`) is recognised by ``RANK`` and ``WORLD_SIZE`` and
    wins over SLURM, so ``srun torchrun ...`` is read as torchrun. SLURM is recognised by
    ``SLURM_PROCID`` with ``SLURM_NTASKS`` (or ``SLURM_STEP_NUM_TASKS``) outside an interactive
    shell allocation; its rendezvous host is the first node of the job's node list (or
    ``MASTER_ADDR``), its port ``MASTER_PORT`` or one derived from ``SLURM_JOB_ID`` so that every
    rank agrees without talking. Anything else is a single process.

    Args:
        environ: the environment to read; ``os.environ`` when ``None``.

    Returns:
        The launcher's kind and this process's ranks; ``LaunchInfo()`` without a launcher.

    Raises:
        ConfigurationError: a launcher variable is not an int or the ranks are inconsistent.
    """
    env = os.environ if environ is None else environ
    if env.get("RANK") and env.get("WORLD_SIZE"):
        return _torchrun(env)
    if (
        env.get("SLURM_PROCID")
        and (env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS"))
        and env.get("SLURM_JOB_NAME", "") not in _SLURM_INTERACTIVE_NAMES
    ):
        return _slurm(env)
    return LaunchInfo()
