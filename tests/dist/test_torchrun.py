"""Real ``torchrun`` jobs of tests/dist/torchrun_job.py: one node and two, on 127.0.0.1.

One node runs two processes; two nodes (two torchrun agents) run one process each.
Every port is picked free (bound to port 0) and passed on the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helios.dist import free_port

JOB = Path(__file__).with_name("torchrun_job.py")
LIMIT = 240  # seconds: torchrun start-up is slow on two shared cores, but never unbounded


def torchrun(*options: str, output: Path) -> subprocess.Popen[str]:
    launcher = {
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    }
    environ = {
        k: v for k, v in os.environ.items() if k not in launcher and not k.startswith("SLURM_")
    }
    environ["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *options, str(JOB), str(output)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(agents: list[subprocess.Popen[str]]) -> None:
    try:
        outputs = [agent.communicate(timeout=LIMIT)[0] for agent in agents]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    for agent, output in zip(agents, outputs, strict=True):
        assert agent.returncode == 0, output


def results(folder: Path, world_size: int) -> list[dict[str, Any]]:
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(world_size)]


def check_collectives(seen: list[dict[str, Any]]) -> None:
    world_size = len(seen)
    ranks = list(range(world_size))
    for one in seen:
        assert one["mean"] == {
            "rank": sum(ranks) / world_size,
            "square": sum(r * r for r in ranks) / world_size,
        }
        assert one["everyone"] == [r["context"][:3] for r in seen]
        assert one["from_last"] == f"rank {world_size - 1}"
        assert one["any_last"] is True
        assert one["backend"] == "gloo"
        assert one["group_left"] is True


@pytest.mark.timeout(LIMIT + 60)
def test_torchrun_one_node_two_processes(tmp_path: Path) -> None:
    port = free_port()
    finish(
        [
            torchrun(
                "--nnodes=1",
                "--nproc-per-node=2",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                output=tmp_path,
            )
        ]
    )
    seen = results(tmp_path, 2)
    for rank, one in enumerate(seen):
        assert one["launch"] == {
            "kind": "torchrun",
            "rank": rank,
            "local_rank": rank,
            "node_rank": 0,
            "world_size": 2,
            "local_world_size": 2,
        }
        assert one["context"] == [rank, rank, 0, 2]
        assert one["flags"] == one["helpers"] == [rank == 0, rank == 0]
    check_collectives(seen)


@pytest.mark.timeout(LIMIT + 60)
def test_torchrun_two_nodes_one_process_each(tmp_path: Path) -> None:
    port = free_port()
    agents = [
        torchrun(
            "--nnodes=2",
            f"--node-rank={node}",
            "--nproc-per-node=1",
            "--master-addr=127.0.0.1",
            f"--master-port={port}",
            output=tmp_path,
        )
        for node in range(2)
    ]
    finish(agents)
    seen = results(tmp_path, 2)
    for rank, one in enumerate(seen):
        # Global rank and node rank follow the node; each node's only process is local rank 0.
        assert one["launch"] == {
            "kind": "torchrun",
            "rank": rank,
            "local_rank": 0,
            "node_rank": rank,
            "world_size": 2,
            "local_world_size": 1,
        }
        assert one["context"] == [rank, 0, rank, 2]
        assert one["flags"] == one["helpers"] == [rank == 0, True]
    check_collectives(seen)
