"""``TorchDistributed`` in one process: stand-alone, and in a real Gloo group of one.

A group of one runs real ``torch.distributed`` collectives in the test process itself (cheap),
so start-up, every collective and clean-up are checked here without spawning; the tests with
several processes are in test_spawn.py and test_torchrun.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from helios.core import ConfigurationError, DistributedContext, HeliosError
from helios.dist import (
    TorchDistributed,
    free_port,
    global_rank,
    is_local_main_process,
    is_main_process,
    local_rank,
    rank_zero_only,
)

LAUNCHER_VARIABLES = [
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_USE_AGENT_STORE",
    "HELIOS_DIST_BACKEND",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_JOB_NAME",
]


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def torchrun_of_one(no_launcher: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }.items():
        no_launcher.setenv(name, value)
    yield
    if dist.is_initialized():  # a failed test must not leave its group to the next one
        dist.destroy_process_group()


def test_it_is_a_distributed_context(no_launcher: pytest.MonkeyPatch) -> None:
    assert isinstance(TorchDistributed.from_environment(device="cpu"), DistributedContext)


def test_single_process_collectives_return_their_input(no_launcher: pytest.MonkeyPatch) -> None:
    with TorchDistributed.from_environment(device="cpu") as ctx:
        assert (ctx.rank, ctx.local_rank, ctx.node_rank, ctx.world_size) == (0, 0, 0, 1)
        assert (ctx.is_distributed, ctx.is_main_process, ctx.is_local_main_process) == (
            False,
            True,
            True,
        )
        assert ctx.backend is None and ctx.launch.kind == "none"
        assert ctx.device == ctx.map_location == torch.device("cpu")
        assert not dist.is_initialized()
        ctx.barrier()
        assert ctx.all_reduce_mean({"loss": torch.tensor(0.25), "acc": 3}) == {
            "loss": 0.25,
            "acc": 3.0,
        }
        values = torch.tensor([1.5, 2.0])
        total = ctx.all_reduce_sum(values)
        assert torch.equal(total, values) and total is not values
        payload = {"a": [1, 2]}
        assert ctx.broadcast_object(payload) is payload
        assert ctx.all_gather_object("x") == ["x"]
        assert ctx.agree(True, "all") and not ctx.agree(False, "any")

        net = nn.Linear(2, 2)
        assert ctx.wrap(net) is net and ctx.unwrap(net) is net
        assert isinstance(ctx.no_sync(net), contextlib.nullcontext)


def test_group_of_one_runs_real_collectives_and_is_destroyed(torchrun_of_one: None) -> None:
    previous_handler = signal.getsignal(signal.SIGTERM)
    ctx = TorchDistributed.from_environment(device="cpu", timeout=timedelta(minutes=2))
    assert dist.is_initialized() and dist.get_backend() == "gloo" == ctx.backend
    assert ctx.launch.kind == "torchrun" and not ctx.is_distributed
    assert signal.getsignal(signal.SIGTERM) is not previous_handler  # SIGTERM leaves cleanly
    assert global_rank() == 0 and is_main_process()

    ctx.barrier()
    assert ctx.all_reduce_mean({"loss": torch.tensor([1.5]), "n": 4}) == {"loss": 1.5, "n": 4.0}
    counts = torch.tensor([3, 4], dtype=torch.int64)
    assert torch.equal(ctx.all_reduce_sum(counts), counts)
    assert ctx.broadcast_object({"k": (1, "v")}) == {"k": (1, "v")}
    assert ctx.all_gather_object(7) == [7]
    assert ctx.agree(True, "any") and not ctx.agree(False, "all")

    ctx.close()
    ctx.close()  # idempotent
    assert not dist.is_initialized()
    assert signal.getsignal(signal.SIGTERM) is previous_handler
    with pytest.raises(HeliosError, match="after the context was closed"):
        ctx.barrier()


def test_group_is_destroyed_when_the_block_raises(torchrun_of_one: None) -> None:
    def fail_inside_the_block() -> None:
        with TorchDistributed.from_environment(device="cpu"):
            assert dist.is_initialized()
            raise RuntimeError("user error")

    with pytest.raises(RuntimeError, match="user error"):
        fail_inside_the_block()
    assert not dist.is_initialized()


def test_sigterm_leaves_the_block_and_destroys_the_group(torchrun_of_one: None) -> None:
    def terminated_inside_the_block() -> None:
        with TorchDistributed.from_environment(device="cpu"):
            assert dist.is_initialized()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler interrupts this

    with pytest.raises(SystemExit) as caught:
        terminated_inside_the_block()
    assert caught.value.code == 128 + signal.SIGTERM
    assert not dist.is_initialized()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_slurm_job_of_one_starts_through_tcp(no_launcher: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_NODELIST": "localhost",
        "MASTER_PORT": str(free_port()),
    }.items():
        no_launcher.setenv(name, value)
    with TorchDistributed.from_environment(backend="gloo", device="cpu") as ctx:
        assert ctx.launch.kind == "slurm" and dist.is_initialized()
        assert ctx.all_reduce_mean({"x": 2.0}) == {"x": 2.0}
    assert not dist.is_initialized()


def test_an_existing_group_is_adopted_not_destroyed(no_launcher: pytest.MonkeyPatch) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    try:
        with TorchDistributed.from_environment(device="cpu") as ctx:
            assert ctx.backend == "gloo"
            assert ctx.all_gather_object("only") == ["only"]
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_unwrap_and_no_sync_see_through_ddp(torchrun_of_one: None) -> None:
    with TorchDistributed.from_environment(device="cpu") as ctx:
        net = nn.Linear(3, 1)
        ddp = DistributedDataParallel(net)
        assert ctx.unwrap(ddp) is net
        assert list(ctx.unwrap(ddp).state_dict()) == ["weight", "bias"]
        assert ctx.wrap(ddp) is ddp
        assert not isinstance(ctx.no_sync(ddp), contextlib.nullcontext)
        assert isinstance(ctx.no_sync(net), contextlib.nullcontext)


def test_unwrap_sees_through_torch_compile(no_launcher: pytest.MonkeyPatch) -> None:
    net = nn.Linear(3, 1)
    compiled = torch.compile(net)
    ctx = TorchDistributed.from_environment(device="cpu")
    assert ctx.unwrap(compiled) is net


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "mpi"}, r"backend must be one of \('auto', 'gloo', 'nccl'\), got 'mpi'"),
        ({"device": "tpu"}, "device must be None, 'cpu' or 'cuda', got 'tpu'"),
        ({"timeout": timedelta(0)}, "timeout must be a positive timedelta"),
        ({"timeout": 30}, "timeout must be a positive timedelta, got 30"),
        ({"backend": "nccl", "device": "cpu"}, "backend='nccl' needs a CUDA device"),
    ],
)
def test_bad_arguments_are_named(
    no_launcher: pytest.MonkeyPatch, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TorchDistributed.from_environment(**kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_a_configuration_error(no_launcher: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="CUDA is not available"):
        TorchDistributed.from_environment(device="cuda")


def test_bad_metrics_and_ranks_are_named(no_launcher: pytest.MonkeyPatch) -> None:
    ctx = TorchDistributed.from_environment(device="cpu")
    with pytest.raises(ConfigurationError, match=r"metric 'acc' .* shape \(2,\)"):
        ctx.all_reduce_mean({"acc": torch.ones(2)})
    with pytest.raises(ConfigurationError, match=r"metric 'name' must be a float .* got 'x'"):
        ctx.all_reduce_mean({"name": "x"})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match=r"all_reduce_sum needs a tensor, got \[1.0\]"):
        ctx.all_reduce_sum([1.0])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"src must be a rank in \[0, 1\), got 3"):
        ctx.broadcast_object(1, src=3)
    with pytest.raises(ConfigurationError, match="mode must be 'any' or 'all'"):
        ctx.agree(True, "most")  # type: ignore[arg-type]


def test_rank_helpers_read_the_launcher_before_any_group(
    no_launcher: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    @rank_zero_only
    def record(value: int) -> int:
        calls.append(value)
        return value * 2

    assert record(3) == 6 and calls == [3]
    assert record.__name__ == "record"
    no_launcher.setenv("RANK", "3")
    no_launcher.setenv("LOCAL_RANK", "1")
    no_launcher.setenv("WORLD_SIZE", "4")
    assert record(5) is None and calls == [3]
    assert (global_rank(), local_rank()) == (3, 1)
    assert not is_main_process() and not is_local_main_process()
