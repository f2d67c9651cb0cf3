"""An OSError while writing leaves earlier checkpoints intact and raises a CheckpointError.

Real failures where the machine allows them (a file-size limit gives a genuine EFBIG, a folder
that vanished or is read-only), injected ones (disk full, a failed rename) at the store's seams.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from state_checks import assert_nested_equal

from helios.ckpt import CheckpointError, DirectoryCheckpointStore, _format, _store

from .conftest import make_state


@pytest.fixture
def store_with_two(tmp_path: Path) -> DirectoryCheckpointStore:
    """A store (keep_last=2, so a premature prune would show) holding steps 1 and 2."""
    store = DirectoryCheckpointStore(tmp_path, keep_last=2)
    store.save(make_state(1), step=1, epoch=0)
    store.save(make_state(2), step=2, epoch=0)
    return store


def assert_untouched(store: DirectoryCheckpointStore) -> None:
    assert sorted(os.listdir(store.directory)) == ["step-00000001.pt", "step-00000002.pt"]
    for step in (1, 2):
        assert_nested_equal(store.load(f"step-{step:08d}.pt"), make_state(step))
    latest = store.latest()
    assert latest is not None
    assert latest.step == 2


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_real_file_too_large(store_with_two: DirectoryCheckpointStore) -> None:
    size = (store_with_two.directory / "step-00000002.pt").stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (size * 4, hard))
    try:
        with pytest.raises(CheckpointError, match=r"step-00000003\.pt.*File too large") as caught:
            store_with_two.save(make_state(3, numel=100_000), step=3, epoch=0)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.EFBIG
    assert "earlier checkpoints are untouched" in str(caught.value)
    assert_untouched(store_with_two)


def test_injected_disk_full(
    store_with_two: DirectoryCheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = _format._PayloadSink._write_all
    written = [0]

    def fill_up(self: Any, view: memoryview) -> None:
        written[0] += len(view)
        if written[0] > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(self, view)

    monkeypatch.setattr(_format._PayloadSink, "_write_all", fill_up)
    with pytest.raises(CheckpointError, match="No space left on device") as caught:
        store_with_two.save(make_state(3), step=3, epoch=0)
    assert isinstance(caught.value.__cause__, OSError)
    monkeypatch.undo()
    assert_untouched(store_with_two)


def test_injected_failed_rename_over_the_same_step(
    store_with_two: DirectoryCheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def refuse(source: Any, target: Any) -> None:
        if Path(target).parent == store_with_two.directory:
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        real_replace(source, target)

    monkeypatch.setattr(_store.os, "replace", refuse)
    with pytest.raises(CheckpointError, match="Permission denied"):
        store_with_two.save(make_state(99), step=2, epoch=0)  # overwriting step 2 fails
    monkeypatch.undo()
    assert_untouched(store_with_two)  # step 2 still holds its old state


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() == 0, reason="root ignores folder permissions"
)
def test_real_permission_denied(store_with_two: DirectoryCheckpointStore) -> None:
    store_with_two.directory.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="Permission denied"):
            store_with_two.save(make_state(3), step=3, epoch=0)
    finally:
        store_with_two.directory.chmod(0o755)
    assert_untouched(store_with_two)


def test_real_folder_gone(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path / "ckpt")
    shutil.rmtree(store.directory)
    (tmp_path / "ckpt").write_text("a file where the folder was")
    with pytest.raises(CheckpointError, match="could not write checkpoint") as caught:
        store.save(make_state(1), step=1, epoch=0)
    assert isinstance(caught.value.__cause__, OSError)


def test_failed_pruning_does_not_fail_a_durable_save(
    store_with_two: DirectoryCheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helios.ckpt import CheckpointWarning

    def refuse(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.warns(CheckpointWarning, match="was saved, but pruning old checkpoints"):
        info = store_with_two.save(make_state(3), step=3, epoch=0)
    monkeypatch.undo()
    assert_nested_equal(store_with_two.load(info), make_state(3))
