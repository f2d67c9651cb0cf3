"""A real ``tensorboard`` server, on 127.0.0.1 over the log folder, serves the logged scalars.

The run is the resume scenario (stop at step 50, last checkpoint at 40, resume to 80), so the
server is also shown to honour the purge: it serves steps 1..80, each once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helios.log import TensorBoardLogger

STARTUP_LIMIT_S = 90.0  # two shared cores: the server may be slow to come up


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    first = TensorBoardLogger(tmp_path)
    for step in range(1, 51):
        first.log_scalars({"train/loss": float(step), "lr": 0.5}, step)
    first.flush()  # the run stops here; checkpoint at step 40
    resumed = TensorBoardLogger(tmp_path)
    resumed.resume(40)
    for step in range(41, 81):
        resumed.log_scalars({"train/loss": 1000.0 + step, "lr": 0.25}, step)
    resumed.close()
    return tmp_path


@pytest.fixture
def server(log_dir: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(log_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the data server it starts goes too
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def scalars_when_complete(base: str, tag: str, last_step: int) -> list[list[float]]:
    """Poll the scalars API until ``tag`` reaches ``last_step`` (the server loads gradually)."""
    url = f"{base}/data/plugin/scalars/scalars?" + urllib.parse.urlencode({"tag": tag, "run": "."})
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while True:
        try:
            points: list[list[float]] = get(url)
            if points and points[-1][1] >= last_step:
                return points
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass  # not listening yet, or the run not loaded yet
        if time.monotonic() > deadline:
            pytest.fail(f"tensorboard did not serve {tag!r} up to step {last_step} in time")
        time.sleep(0.25)


def test_the_server_serves_each_logged_step_once(server: str) -> None:
    loss = scalars_when_complete(server, "train/loss", 80)
    lr = scalars_when_complete(server, "lr", 80)

    tags = get(f"{server}/data/plugin/scalars/tags")
    assert set(tags) == {"."}
    assert set(tags["."]) == {"train/loss", "lr"}
    # Each point is [wall_time, step, value].
    assert [(step, value) for _, step, value in loss] == [
        (step, float(step) if step <= 40 else 1000.0 + step) for step in range(1, 81)
    ]
    assert [(step, value) for _, step, value in lr] == [
        (step, 0.5 if step <= 40 else 0.25) for step in range(1, 81)
    ]
