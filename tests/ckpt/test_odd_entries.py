"""Every entry named like a checkpoint gets a verdict, nothing blocks, and temporaries go.

The seven kinds of damage, a FIFO, a folder, a symlink to ``/dev/zero`` and a misnamed copy are
each put in place of the newest checkpoint: ``inspect`` names what it is, ``latest`` and
``load`` fall back to the good one without blocking, and pruning is not disturbed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from damage import DAMAGE
from state_checks import assert_nested_equal

from helios.ckpt import CheckpointWarning, DirectoryCheckpointStore

from .conftest import make_state
from .test_safety import Payload, forge


@pytest.mark.timeout(30)
@pytest.mark.parametrize("damage", DAMAGE, ids=str)
def test_each_damage_gets_a_verdict_and_the_good_one_is_used(tmp_path: Path, damage: str) -> None:
    corrupt, verdict, reason = DAMAGE[damage]
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    for step in (1, 2, 3):
        store.save(make_state(step), step=step, epoch=0)
    newest = tmp_path / "step-00000003.pt"
    corrupt(newest)

    entries = store.inspect(load=True)
    assert [(e.step, e.verdict) for e in entries] == [(1, "ok"), (2, "ok"), (3, verdict)]
    assert reason in entries[-1].reason
    with pytest.warns(CheckpointWarning, match="step-00000003.pt"):
        latest = store.latest()
    assert latest is not None
    assert latest.step == 2
    with pytest.warns(CheckpointWarning, match="step-00000003.pt"):
        assert_nested_equal(store.load(), make_state(2))


@pytest.mark.timeout(30)
def test_a_folder_named_like_a_checkpoint_does_not_stop_pruning(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=1)
    (tmp_path / "step-00000001.pt").mkdir()
    os.mkfifo(tmp_path / "step-00000002.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "pruning failed" on any save
        for step in (3, 4, 5):
            store.save(make_state(step), step=step, epoch=0)
    names = sorted(os.listdir(tmp_path))
    assert names == ["step-00000001.pt", "step-00000002.pt", "step-00000005.pt"]


def test_an_intact_file_that_loading_refuses_is_refused_not_ok(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = DirectoryCheckpointStore(tmp_path / "ckpt", keep_last=None)
    store.save(make_state(1), step=1, epoch=0)
    forge(store.directory / "step-00000002.pt", {"hook": Payload(marker)}, step=2)
    entries = store.inspect(load=True)
    assert [(e.step, e.verdict) for e in entries] == [(1, "ok"), (2, "REFUSED")]
    assert "weights_only" in entries[1].reason
    assert [e.verdict for e in store.inspect()] == ["ok", "ok"]  # without loading, intact
    assert not marker.exists()


def test_leftovers_and_other_pt_files_are_listed_with_their_size(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    info = store.save(make_state(1), step=1, epoch=0)
    (tmp_path / ".step-00000002.pt.0123abcd.tmp").write_bytes(b"x" * 1000)
    (tmp_path / "best.pt").write_bytes(info.path.read_bytes())
    entries = {e.path.name: e for e in store.inspect()}
    assert entries[".step-00000002.pt.0123abcd.tmp"].verdict == "temporary"
    assert entries[".step-00000002.pt.0123abcd.tmp"].size == 1000
    assert entries["best.pt"].verdict == "ignored"
    assert entries["step-00000001.pt"].verdict == "ok"
    removed = store.remove_temporary_files()
    assert [(p.name, size) for p, size in removed] == [(".step-00000002.pt.0123abcd.tmp", 1000)]
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "step-00000001.pt"]


# A run's first save, after opening the store as its one writer (as the trainer does): the
# parent kills it mid-write. A fresh interpreter, not a fork: a fork of a process with threads
# can deadlock before it writes anything.
FIRST_SAVE = """
import sys, torch
from helios.ckpt import DirectoryCheckpointStore
store = DirectoryCheckpointStore(sys.argv[1], keep_last=2)
store.remove_temporary_files()
store.save({"weight": torch.zeros(8_000_000)}, step=1, epoch=0)  # ~32 MB: time to kill it
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="needs SIGKILL")
@pytest.mark.timeout(240)
def test_a_crash_loop_in_the_first_save_leaves_at_most_one_temporary_file(tmp_path: Path) -> None:
    kills = 0
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", FIRST_SAVE, str(tmp_path)])
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and child.poll() is None:
                # a fresh temporary file (the previous run's is removed when the store opens)
                if len(list(tmp_path.glob(".step-*.tmp"))) == 1 and any(
                    p.stat().st_size > 1_000_000 for p in tmp_path.glob(".step-*.tmp")
                ):
                    break
                time.sleep(0.002)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        kills += child.returncode == -signal.SIGKILL
        assert len(list(tmp_path.glob(".step-*.tmp"))) <= 1
    assert kills == 5
    assert not list(tmp_path.glob("step-*.pt"))  # every save was killed before its rename
    DirectoryCheckpointStore(tmp_path).remove_temporary_files()  # the next open
    assert os.listdir(tmp_path) == []
