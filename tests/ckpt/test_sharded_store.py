"""Sharded checkpoints in one process: both kinds in one folder, safe loading, bad input.

Without a process group ``save_sharded`` writes a sharded checkpoint of one rank through the
same DCP path and commit as a job does; what needs several ranks is in
``test_sharded_process_group.py``.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from state_checks import assert_nested_equal

from helios.ckpt import (
    CheckpointError,
    CheckpointWarning,
    DirectoryCheckpointStore,
    _sharded,
    consolidate,
)
from helios.core import CheckpointStore, ConfigurationError, ShardedCheckpointStore

from .conftest import make_state

MARKER = Path("/tmp") / "helios-sharded-pickle-ran"


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (MARKER.write_text, ("ran",))


def _rehash(folder: Path) -> None:
    """Make the manifest agree with the folder's files again (an attacker's checkpoint)."""
    manifest = json.loads((folder / _sharded.MANIFEST).read_text())
    for name in manifest["files"]:
        size, sha256 = _sharded.hash_file(folder / name)
        manifest["files"][name] = {"size": size, "sha256": sha256}
    (folder / _sharded.MANIFEST).write_text(json.dumps(manifest))


def test_both_kinds_share_listing_latest_best_and_retention(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=2, keep_best=1, best_metric="loss")
    assert isinstance(store, CheckpointStore) and isinstance(store, ShardedCheckpointStore)
    losses = {1: 0.1, 2: 0.5, 3: 0.4, 4: 0.3}
    for step, loss in losses.items():
        if step % 2:
            store.save_sharded(make_state(step), step=step, epoch=0, metrics={"loss": loss})
        else:
            store.save(make_state(step), step=step, epoch=0, metrics={"loss": loss})
    listed = store.list()
    # last two (3 sharded, 4 a file) and the best (1, sharded) survive; 2 was pruned
    assert [(info.step, info.sharded, info.path.name) for info in listed] == [
        (1, True, "step-00000001"),
        (3, True, "step-00000003"),
        (4, False, "step-00000004.pt"),
    ]
    best = store.best()
    assert best is not None and best.step == 1 and best.sharded
    loaded = store.load(best)
    assert_nested_equal(loaded, make_state(1))  # int keys of optimizer state come back as int
    latest = store.latest()
    assert latest is not None and latest.step == 4
    assert [e.verdict for e in store.inspect(load=True)] == ["ok", "ok", "ok"]


def test_saving_a_step_again_replaces_the_folder(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.save_sharded(make_state(1), step=5, epoch=0)
    second = store.save_sharded(make_state(2), step=5, epoch=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["step-00000005"]
    assert second.epoch == 1
    assert_nested_equal(store.load(), make_state(2))


def test_load_sharded_fills_the_state_in_place(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.save_sharded(make_state(7), step=7, epoch=0)
    target = make_state(0)
    store.load_sharded("step-00000007", target)
    assert_nested_equal(target, make_state(7))


def test_a_metadata_index_that_would_run_code_is_refused(tmp_path: Path) -> None:
    MARKER.unlink(missing_ok=True)
    store = DirectoryCheckpointStore(tmp_path)
    info = store.save_sharded(make_state(1), step=1, epoch=0)
    (info.path / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    _rehash(info.path)  # intact by its manifest: only the safe unpickler stands in the way
    with pytest.raises(CheckpointError, match=r"refused to load sharded checkpoint"):
        store.load(info.path)
    with pytest.raises(CheckpointError, match=r"refused"):
        store.load_sharded(None, make_state(0))
    assert [entry.verdict for entry in store.inspect(load=True)] == ["REFUSED"]
    assert not MARKER.exists()


def test_a_state_that_would_not_load_back_is_refused_before_writing(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    with pytest.raises(CheckpointError, match=r"weights_only"):
        store.save_sharded({"bad": {"object": _RunsCode()}}, step=1, epoch=0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigurationError, match=r"asynchronous must be a bool, got 'yes'"):
        store.save_sharded(make_state(1), step=1, epoch=0, asynchronous="yes")  # type: ignore[arg-type]


def test_a_misnamed_or_unlisted_folder_is_not_trusted(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    store.save_sharded(make_state(1), step=1, epoch=0)
    info = store.save_sharded(make_state(2), step=2, epoch=0)
    (info.path / "stray.bin").write_bytes(b"x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointWarning)
        latest = store.latest()
    assert latest is not None and latest.step == 1
    assert "holds stray.bin, which its manifest.json does not list" in str(caught[0].message)
    (info.path / "stray.bin").unlink()
    info.path.rename(tmp_path / "step-00000009")
    with pytest.warns(CheckpointWarning, match=r"misnamed: its manifest says step 2"):
        assert store.latest().step == 1  # type: ignore[union-attr]


def test_load_sharded_of_a_file_checkpoint_says_so(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.save(make_state(1), step=1, epoch=0)
    with pytest.raises(CheckpointError, match=r"is a single file, not a sharded checkpoint"):
        store.load_sharded(None, make_state(0))


def test_consolidate_refuses_bad_arguments(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    info = store.save_sharded(make_state(3), step=3, epoch=0)
    with pytest.raises(ConfigurationError, match=r"output=.* is a folder; expected a file"):
        consolidate(info.path, tmp_path)
    with pytest.raises(ConfigurationError, match=r"lies inside the sharded checkpoint"):
        consolidate(info.path, info.path / "x.pt")
    with pytest.raises(CheckpointError, match=r"is not a sharded checkpoint"):
        consolidate(tmp_path, tmp_path / "x.pt")
    written = consolidate(info.path, tmp_path / "one.pt")
    assert_nested_equal(DirectoryCheckpointStore(tmp_path).load(written), make_state(3))


def test_set_aside_and_temporary_folders_cover_sharded_checkpoints(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=None)
    for step in (1, 2, 3):
        store.save_sharded(make_state(step), step=step, epoch=0)
    moved = store.set_aside(after_step=1)
    assert moved is not None
    assert sorted(path.name for path in moved[1]) == ["step-00000002", "step-00000003"]
    assert [info.step for info in store.list()] == [1]
    (tmp_path / _sharded.temporary_name(4, "ab" * 8)).mkdir()
    (tmp_path / _sharded.temporary_name(4, "ab" * 8) / "__0_0.distcp").write_bytes(b"123")
    assert [(e.verdict, e.size) for e in store.inspect() if e.verdict == "temporary"] == [
        ("temporary", 3)
    ]
    assert len(store.remove_temporary_files()) == 1
    assert torch.equal(store.load()["model"]["bias"], make_state(1)["model"]["bias"])
