"""``spawn``: real process groups of several Gloo ranks through torch.multiprocessing.

The children run the functions of ``helios_dist_workers`` and save what they saw; the
assertions are here. One job checks every collective, the rank helpers and DDP at once, because
starting processes (importing torch in each) is what costs time.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import helios_dist_workers as workers
import psutil
import pytest
import torch

from helios.core import ConfigurationError
from helios.dist import SpawnError, spawn


def load(folder: Path, name: str) -> dict[str, Any]:
    result: dict[str, Any] = torch.load(folder / f"{name}.pt", weights_only=False)
    return result


def pids(folder: Path) -> list[int]:
    return [int(path.read_text()) for path in sorted(folder.glob("pid*"))]


def spawned_children() -> list[psutil.Process]:
    """This process's children started by multiprocessing's "spawn" (not its resource tracker)."""
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                children.append(child)
        except psutil.NoSuchProcess:
            pass
    return children


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two spawned jobs at once, from two threads of this process.

    Job "main" (2 ranks) runs every collective, the rank helpers and DDP; job "side" (2 ranks)
    only averages a number: if the jobs shared a port they would join one another's group.
    Starting processes is what costs time, so the tests below all read these two jobs.
    """
    folders = {name: tmp_path_factory.mktemp(name) for name in ("main", "side")}
    jobs = {
        "main": (workers.collectives_and_ddp, (str(folders["main"]),)),
        "side": (workers.job_mean, (str(folders["side"]), 100.0)),
    }
    errors: dict[str, BaseException] = {}

    def run(name: str) -> None:
        fn, args = jobs[name]
        try:
            spawn(fn, 2, args=args, backend="gloo", timeout=240)
        except BaseException as error:  # the tests report it
            errors[name] = error

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == {}
    return folders


@pytest.fixture(scope="module")
def two_ranks(two_jobs: dict[str, Path]) -> list[dict[str, Any]]:
    folder = two_jobs["main"]
    return [load(folder, f"rank{rank}") | load(folder, f"after{rank}") for rank in range(2)]


def test_each_child_knows_its_place(two_ranks: list[dict[str, Any]]) -> None:
    for rank, seen in enumerate(two_ranks):
        assert seen["ranks"] == (rank, rank, 0, 2)
        assert seen["flags"] == (True, rank == 0, rank == 0)
        assert seen["helpers"] == (rank, rank == 0, rank == 0)
        assert seen["rank_zero_only"] == ("ran" if rank == 0 else None)
        assert (seen["device"], seen["map_location"]) == ("cpu", "cpu")
        assert (seen["backend"], seen["launcher"]) == ("gloo", "torchrun")
        # DataLoader workers of a rank start from a fork server: not "spawn" (slow, every epoch)
        # and not a fork of the multi-threaded rank (which can deadlock)
        assert seen["start_method"] == "forkserver"


def test_collectives_agree_on_every_rank(two_ranks: list[dict[str, Any]]) -> None:
    for seen in two_ranks:
        assert seen["mean"] == {"float": 1.5, "tensor": 1.0, "int": 0.5}
        assert torch.equal(seen["sum"], torch.tensor([3.0, 10.0], dtype=torch.float64))
        assert seen["broadcast"] == {"sender": 1, "payload": [1, 1, 1]}
        assert seen["gather"] == [("rank", 0), ("rank", 1)]
        assert seen["agree"] == {
            "any_one": True,
            "all_one": False,
            "all_true": True,
            "any_false": False,
        }


def test_the_group_is_destroyed_when_the_block_ends(two_ranks: list[dict[str, Any]]) -> None:
    for seen in two_ranks:
        assert seen["closed"] and seen["group_left"]


def test_ddp_on_two_ranks_matches_one_process_on_the_global_batch(
    two_ranks: list[dict[str, Any]],
) -> None:
    reference = workers.make_network()
    workers.train(reference, slice(None))
    expected = reference.state_dict()
    for seen in two_ranks:
        assert seen["wrapped_type"] == "DistributedDataParallel"
        assert seen["device_ids"] is None
        assert seen["frozen_type"] == "Linear"  # nothing to synchronise: not wrapped
        state = seen["state_dict"]
        assert list(state) == list(expected)  # no "module." prefix
        for name, value in expected.items():
            # fp32 tolerance: only the order in which gradients are averaged differs.
            assert torch.allclose(state[name], value, rtol=1e-5, atol=1e-6), name
    # The ranks themselves hold bit-identical parameters.
    for name, value in two_ranks[0]["state_dict"].items():
        assert torch.equal(value, two_ranks[1]["state_dict"][name]), name
    # And training did move them: the comparison is not of two untouched networks.
    untouched = workers.make_network().state_dict()
    assert not torch.equal(untouched["0.weight"], expected["0.weight"])


def test_no_sync_keeps_gradients_local(two_ranks: list[dict[str, Any]]) -> None:
    local = two_ranks[0]["grads_no_sync"]
    synced = two_ranks[0]["grads_synced"]
    assert not all(torch.equal(a, b) for a, b in zip(local[0], local[1], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(synced[0], synced[1], strict=True))
    # Synchronised gradients are the mean of the local ones.
    for a, b, mean in zip(local[0], local[1], synced[0], strict=True):
        assert torch.allclose((a + b) / 2, mean)


def test_a_failing_rank_is_reported_and_no_process_is_left(tmp_path: Path) -> None:
    with pytest.raises(SpawnError) as caught:
        # The grace period only runs while rank 0 is still alive: it ends it early by itself.
        spawn(workers.rank_one_fails, 2, args=(str(tmp_path),), grace_period=30.0, timeout=240)
    error = caught.value
    assert error.rank == 1 and error.exit_code == 1
    assert error.traceback is not None
    assert "ValueError: rank one fails on purpose" in error.traceback
    assert "in rank_one_fails" in error.traceback
    assert str(error).startswith("rank 1 of 2 failed (ranks [0] failed after it)")
    # Rank 0 was not left hanging: its barrier failed with an error naming it.
    assert list(error.later_failures) == [0]
    assert "CollectiveError: barrier failed on rank 0 of 2" in error.later_failures[0]
    assert "process died or left the group" in error.later_failures[0]  # not "a timeout"
    started = pids(tmp_path)
    assert len(started) == 2
    assert not any(psutil.pid_exists(pid) for pid in started)
    assert spawned_children() == []


def test_a_sigkilled_rank_is_named_not_the_rank_that_waited_for_it(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SpawnError) as caught:
        spawn(workers.rank_one_is_killed, 2, args=(str(tmp_path),), grace_period=30.0, timeout=240)
    error = caught.value
    assert error.rank == 1
    assert error.exit_code == -signal.SIGKILL
    assert str(error).startswith("rank 1 of 2 was killed by signal SIGKILL")
    assert list(error.later_failures) == [0]  # its barrier failed because rank 1 was gone
    assert time.monotonic() - started < 60  # no grace period spent on a dead rank
    assert not any(psutil.pid_exists(pid) for pid in pids(tmp_path))


def test_a_hung_rank_is_named_and_stopped_without_delay(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SpawnError) as caught:
        spawn(workers.rank_one_hangs, 2, args=(str(tmp_path),), grace_period=30.0, timeout=240)
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.rank == 1
    assert str(error).startswith("rank 1 of 2 hung: it was still running when rank 0 failed")
    assert list(error.later_failures) == [0]
    # start-up and the 3 s collective timeout; not the 30 s grace period, nor 30 s after SIGTERM
    assert elapsed < 45, elapsed
    assert not any(psutil.pid_exists(pid) for pid in pids(tmp_path))


def test_a_job_past_its_timeout_is_stopped_even_if_it_ignores_sigterm() -> None:
    # The child ignores SIGTERM once it runs (usually well within the 6 s): SIGKILL ends it.
    with pytest.raises(SpawnError, match=r"did not finish within 6 s; ranks \[0\]") as caught:
        spawn(workers.sleep_forever, 1, timeout=6, grace_period=1.0)
    assert caught.value.rank is None
    assert spawned_children() == []


def test_two_jobs_at_once_do_not_clash(
    two_jobs: dict[str, Path], two_ranks: list[dict[str, Any]]
) -> None:
    side = [load(two_jobs["side"], f"rank{rank}") for rank in range(2)]
    for seen in side:
        assert seen["mean"] == 100.5 and seen["world_size"] == 2
        assert len(set(seen["ports"])) == 1
    assert two_ranks[0]["mean"]["float"] == 1.5  # the main job's own mean, unmixed
    assert side[0]["ports"][0] != two_ranks[0]["port"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nprocs": 0}, "nprocs must be an int >= 1, got 0"),
        ({"nprocs": 2, "backend": "mpi"}, "backend must be one of"),
        ({"nprocs": 2, "timeout": -1.0}, "timeout must be None or > 0 seconds, got -1.0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        spawn(workers.sleep_forever, **kwargs)


def test_a_function_the_children_cannot_reach_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="module-level function"):
        spawn(lambda: None, 1)
