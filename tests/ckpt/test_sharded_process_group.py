"""Sharded checkpoints written and read by a real 2-rank Gloo process group (FSDP2 on the CPU).

One job (``helios_ckpt_workers.sharded_checkpoints``) trains a small ``fully_shard`` model and
checks retention, an asynchronous save, two failing ones, fallback past three kinds of damage
and consolidation, and ends by SIGKILLing rank 1 in the middle of a save. Starting processes
(importing torch in each) is what costs time, so the tests below all read this one job.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import helios_ckpt_workers as workers
import pytest
import torch
from state_checks import assert_nested_equal

from helios.ckpt import DirectoryCheckpointStore
from helios.dist import SpawnError, spawn

pytestmark = pytest.mark.slow


def read(folder: Path, rank: int) -> dict[str, Any]:
    result: dict[str, Any] = torch.load(folder / f"rank{rank}.pt", weights_only=False)
    return result


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("sharded")
    with pytest.raises(SpawnError) as failed:
        spawn(
            workers.sharded_checkpoints,
            2,
            args=(str(folder),),
            backend="gloo",
            timeout=400,
            grace_period=5.0,
        )
    # The job ends with the SIGKILL of rank 1 during the save of step 9 (see the last test);
    # rank 0, waiting for it in a collective, may be reported first.
    error = failed.value
    assert (folder / "killed").exists(), error  # rank 1 reached the kill...
    assert "step 9 returned" not in str(error), error  # ...and the save never returned
    if error.rank == 1:
        assert error.exit_code == -signal.SIGKILL, error
    return folder, [read(folder, 0), read(folder, 1)]


def test_retention_counts_sharded_folders(job: tuple[Path, list[dict[str, Any]]]) -> None:
    _, ranks = job
    assert ranks[0]["listed"] == [
        ["step-00000001"],
        ["step-00000001", "step-00000002"],
        ["step-00000002", "step-00000003"],
    ]
    info = ranks[0]["info3"]
    assert info.sharded and info.step == 3 and info.size > 0 and len(info.sha256) == 64
    assert ranks[1]["info3"] == info  # every rank learns what rank 0 committed


def test_an_async_save_commits_the_state_at_the_time_of_the_call(
    job: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, ranks = job
    for rank, result in enumerate(ranks):
        assert result["pending"].sharded and result["pending"].sha256 == ""
        assert result["latest_after_async"].step == 4, rank
        # training changed the parameters while the shards were written...
        assert not torch.equal(
            result["after_async"]["model"]["0.weight"], result["at_save"]["model"]["0.weight"]
        )
        # ...and the checkpoint holds them as they were when save_sharded returned
        assert_nested_equal(result["loaded_async"]["model"], result["at_save"]["model"])
        assert_nested_equal(result["loaded_async"]["optimizer"], result["at_save"]["optimizer"])
        # a per-rank object under its own key comes back to its own rank
        assert_nested_equal(
            result["loaded_async"]["rng"], {f"rank{rank}": torch.full((3,), float(rank))}
        )


def test_a_failing_async_save_surfaces_on_every_rank(
    job: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, ranks = job
    for result in ranks:
        assert "background save of step 5" in result["wait_error"]
        assert "rank 1 could not hash its shards" in result["wait_error"]
        assert "No space left on device" in result["wait_error"]
        assert "background save of step 6" in result["next_save_error"]
        # nothing of the failed saves is left, nothing committed, the last good one is latest
        assert result["after_failures"] == ["step-00000003", "step-00000004"]
        assert result["latest_after_failures"].step == 4


@pytest.mark.parametrize("case", ["truncated", "flipped", "manifest missing"])
def test_a_damaged_sharded_checkpoint_is_refused_and_the_previous_one_used(
    job: tuple[Path, list[dict[str, Any]]], case: str
) -> None:
    _, ranks = job
    expected = {"truncated": "truncated", "flipped": "SHA-256", "manifest missing": "manifest"}
    seen = ranks[0][f"damaged {case}"]
    assert seen["latest"].step == 4
    assert any("step-00000008" in w and expected[case] in w for w in seen["warnings"])
    for result in ranks:
        loaded = result[f"damaged {case}"]["loaded"]
        assert_nested_equal(loaded["model"], result["at_save"]["model"])
        assert_nested_equal(loaded["optimizer"], result["at_save"]["optimizer"])
    assert_nested_equal(seen["single_process"], ranks[0]["at_save"]["model"])


def test_consolidation_gives_the_gathered_full_state(
    job: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, ranks = job
    consolidated = ranks[0]["consolidated"]
    full = ranks[0]["at_save_full"]
    assert_nested_equal(consolidated["model"], full["model"])
    assert_nested_equal(consolidated["optimizer"]["state"], full["optimizer"]["state"])
    assert consolidated["trainer"] == {"step": 0, "name": "fsdp"}
    # per-rank objects were kept under their own keys: both ranks' are in the file
    assert set(consolidated["rng"]) == {"rank0", "rank1"}
    (info,) = ranks[0]["consolidated_info"]
    assert not info.sharded and info.step == 4 and info.path.name == "step-00000004.pt"


def test_a_rank_killed_during_a_sharded_save_leaves_nothing_latest_returns(
    job: tuple[Path, list[dict[str, Any]]],
) -> None:
    folder, _ = job
    assert "__1_0.distcp" in (folder / "killed").read_text()  # killed after writing its shards
    store = DirectoryCheckpointStore(folder / "checkpoints", keep_last=2)
    latest = store.latest()
    assert latest is not None and latest.step == 8 and latest.sharded
    assert [info.step for info in store.list()] == [4, 8]
    leftovers = [entry for entry in store.inspect() if entry.verdict == "temporary"]
    assert len(leftovers) == 1 and leftovers[0].size > 0
    assert leftovers[0].path.name.startswith(".step-00000009.")
    removed = store.remove_temporary_files()
    assert [path.name for path, _ in removed] == [leftovers[0].path.name]
    assert sorted(p.name for p in store.directory.iterdir()) == ["step-00000004", "step-00000008"]
