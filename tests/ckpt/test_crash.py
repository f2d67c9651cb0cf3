"""A save killed with SIGKILL at a random moment never costs the last good checkpoint.

A forked child saves in a loop (each step twice, so overwrites of the same step are killed too,
with retention pruning as it goes); the parent kills it at a random moment, then checks that
``latest()`` is a checkpoint that loads and holds exactly the state of its step, and never an
older one than before the kill.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sys
import time
import warnings
from pathlib import Path

import pytest
from state_checks import assert_nested_equal

from helios.ckpt import CheckpointWarning, DirectoryCheckpointStore

from .conftest import make_state

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs fork and SIGKILL")

TRIALS = 24
NUMEL = 50_000  # ~200 kB per checkpoint: a save takes a few ms, so kills land mid-write


def save_forever(directory: Path, first_step: int, ready: int) -> None:
    store = DirectoryCheckpointStore(directory, keep_last=2)
    os.write(ready, b"r")
    step = first_step
    while True:
        state = make_state(step, numel=NUMEL)
        store.save(state, step=step, epoch=0)
        store.save(state, step=step, epoch=0)  # the same step again: an atomic overwrite
        step += 1


def test_sigkill_at_random_moments_never_loses_the_last_good_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(2024)
    store = DirectoryCheckpointStore(tmp_path, keep_last=2)
    store.save(make_state(0, numel=NUMEL), step=0, epoch=0)
    newest = 0
    killed_mid_write = 0
    for _ in range(TRIALS):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                os.close(read_end)
                save_forever(tmp_path, newest + 1, write_end)
            finally:
                os._exit(1)
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], 60)
            assert ready, "the child never started"
            os.read(read_end, 1)
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
        killed_mid_write += any(name.endswith(".tmp") for name in os.listdir(tmp_path))

        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)  # nothing may look damaged
            latest = store.latest()
            assert latest is not None
            assert latest.step >= newest
            assert_nested_equal(store.load(latest), make_state(latest.step, numel=NUMEL))
            assert_nested_equal(store.load(), make_state(latest.step, numel=NUMEL))
        newest = latest.step
    assert newest > 0  # the children did get checkpoints written
    assert killed_mid_write > 0  # and some kills did land in the middle of a save
