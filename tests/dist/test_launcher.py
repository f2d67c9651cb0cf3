"""Launcher detection, SLURM node lists and free ports: pure functions of the environment."""

from __future__ import annotations

import socket

import pytest

from helios.core import ConfigurationError
from helios.dist import LaunchInfo, detect_launcher, expand_nodelist, free_port

TORCHRUN_NODE_1 = {
    "RANK": "5",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "8",
    "LOCAL_WORLD_SIZE": "4",
    "GROUP_RANK": "1",
    "TORCHELASTIC_RUN_ID": "job",
    "MASTER_ADDR": "node0",
    "MASTER_PORT": "29400",
}

SLURM_NODE_2 = {
    "SLURM_JOB_ID": "123456",
    "SLURM_JOB_NAME": "train",
    "SLURM_PROCID": "9",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "2",
    "SLURM_NTASKS": "12",
    "SLURM_TASKS_PER_NODE": "4(x3)",
    "SLURM_JOB_NODELIST": "gpu[007-009]",
}


def test_no_launcher_is_a_single_process() -> None:
    info = detect_launcher({"PATH": "/usr/bin"})
    assert info == LaunchInfo()
    assert (info.kind, info.rank, info.world_size, info.is_launched) == ("none", 0, 1, False)
    assert info.master_addr is None and info.master_port is None


def test_torchrun_variables() -> None:
    assert detect_launcher(TORCHRUN_NODE_1) == LaunchInfo(
        kind="torchrun",
        rank=5,
        local_rank=1,
        world_size=8,
        local_world_size=4,
        node_rank=1,
        master_addr="node0",
        master_port=29400,
    )


def test_torchrun_node_rank_falls_back_to_equal_nodes() -> None:
    environ = {k: v for k, v in TORCHRUN_NODE_1.items() if k != "GROUP_RANK"}
    environ["RANK"] = "6"
    environ["LOCAL_RANK"] = "2"
    assert detect_launcher(environ).node_rank == 1


def test_slurm_variables_and_derived_rendezvous() -> None:
    info = detect_launcher(SLURM_NODE_2)
    assert (info.kind, info.rank, info.local_rank, info.node_rank) == ("slurm", 9, 1, 2)
    assert (info.world_size, info.local_world_size) == (12, 4)
    assert info.master_addr == "gpu007"
    # Every rank derives the same port from the job id, away from the ephemeral range.
    assert info.master_port == detect_launcher({**SLURM_NODE_2, "SLURM_PROCID": "0"}).master_port
    assert info.master_port is not None and 1024 < info.master_port < 32768


def test_slurm_step_values_and_explicit_master_win() -> None:
    environ = {
        **SLURM_NODE_2,
        "SLURM_STEP_NUM_TASKS": "10",
        "SLURM_STEP_TASKS_PER_NODE": "4,4,2",
        "SLURM_PROCID": "8",
        "SLURM_LOCALID": "0",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "4242",
    }
    info = detect_launcher(environ)
    assert (info.world_size, info.local_world_size) == (10, 2)
    assert (info.master_addr, info.master_port) == ("10.0.0.1", 4242)


def test_torchrun_inside_slurm_is_torchrun() -> None:
    assert detect_launcher({**SLURM_NODE_2, **TORCHRUN_NODE_1}).kind == "torchrun"


def test_interactive_slurm_shell_is_no_launcher() -> None:
    assert detect_launcher({**SLURM_NODE_2, "SLURM_JOB_NAME": "bash"}).kind == "none"


def test_bad_variables_are_named() -> None:
    with pytest.raises(ConfigurationError, match=r"RANK='zero'"):
        detect_launcher({**TORCHRUN_NODE_1, "RANK": "zero"})
    with pytest.raises(ConfigurationError, match=r"rank must be in \[0, world_size=8\), got 8"):
        detect_launcher({**TORCHRUN_NODE_1, "RANK": "8"})
    with pytest.raises(ConfigurationError, match="local_rank"):
        detect_launcher({**TORCHRUN_NODE_1, "LOCAL_RANK": "4"})


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("login1", ["login1"]),
        ("gpu[01-03,07],cpu5", ["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]),
        ("r[1-2]n[08-09]", ["r1n08", "r1n09", "r2n08", "r2n09"]),
        ("a[9-10].cluster", ["a9.cluster", "a10.cluster"]),
    ],
)
def test_expand_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["gpu[01-03", "gpu01]", "gpu[a-b]", ""])
def test_bad_nodelist(nodelist: str) -> None:
    with pytest.raises(ConfigurationError, match="SLURM node list"):
        expand_nodelist(nodelist)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
