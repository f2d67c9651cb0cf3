"""A user's own implementation of each seam drives a real ``fit()`` and ``test()``.

Each protocol of helios.core is implemented here from scratch, as a user would, with no Helios
class underneath: a ``CheckpointStore`` that keeps checkpoints in memory, a ``MetricLogger``
that collects records in a list, a one-process ``DistributedContext`` and a ``DataSource`` over
plain Python lists. A run with all of them resumes exactly (``torch.equal``), trains exactly as
the default implementations do, and every object can be used again afterwards: the trainer
closes only what it built.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
import torch
from linear_job import Linear
from resume_checks import final_checkpoint, metric_series
from state_checks import assert_nested_equal
from torch import nn

from helios.core import (
    CheckpointInfo,
    CheckpointStore,
    ConfigurationError,
    DataSource,
    DistributedContext,
    MetricLogger,
    TrainingState,
)
from helios.trainer import Trainer

T = TypeVar("T")


class MemoryStore:
    """A ``CheckpointStore`` over a dict of bytes (``bucket``, shareable between stores)."""

    def __init__(
        self,
        bucket: dict[str, tuple[CheckpointInfo, bytes]] | None = None,
        *,
        best_metric: str | None = None,
    ) -> None:
        self.bucket = {} if bucket is None else bucket
        self.best_metric = best_metric
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("MemoryStore is closed")

    def save(
        self,
        state: Mapping[str, Any],
        *,
        step: int,
        epoch: int,
        metrics: Mapping[str, float] | None = None,
    ) -> CheckpointInfo:
        self._check_open()
        buffer = io.BytesIO()
        torch.save(dict(state), buffer)
        data = buffer.getvalue()
        info = CheckpointInfo(
            path=Path("memory", f"step-{step:08d}.pt"),
            step=step,
            epoch=epoch,
            metrics=dict(metrics or {}),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        self.bucket[info.path.name] = (info, data)
        return info

    def list(self) -> builtins.list[CheckpointInfo]:
        self._check_open()
        return sorted((info for info, _ in self.bucket.values()), key=lambda info: info.step)

    def latest(self) -> CheckpointInfo | None:
        infos = self.list()
        return infos[-1] if infos else None

    def best(self) -> CheckpointInfo | None:
        name = self.best_metric
        scored = [info for info in self.list() if name is not None and name in info.metrics]
        return min(scored, key=lambda info: info.metrics[name]) if scored else None  # type: ignore[index]

    def load(
        self,
        ref: CheckpointInfo | str | os.PathLike[str] | None = None,
        *,
        map_location: torch.device | str | None = None,
    ) -> dict[str, Any]:
        self._check_open()
        if ref is None:
            ref = self.latest()
            if ref is None:
                raise FileNotFoundError("MemoryStore holds no checkpoint")
        name = ref.path.name if isinstance(ref, CheckpointInfo) else Path(ref).name
        _, data = self.bucket[name]
        loaded: dict[str, Any] = torch.load(
            io.BytesIO(data), map_location=map_location, weights_only=True
        )
        return loaded

    def wait(self) -> None:
        self._check_open()

    def close(self) -> None:
        self.closed = True


class ListLogger:
    """A ``MetricLogger`` that appends ``(step, metrics)`` to ``records`` (shareable)."""

    def __init__(self, records: list[tuple[int, dict[str, float]]] | None = None) -> None:
        self.records = [] if records is None else records
        self.texts: list[tuple[int, str, str]] = []
        self.closed = False

    def _check_open(self, method: str) -> None:
        if self.closed:
            raise RuntimeError(f"ListLogger.{method} called after close()")

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        self._check_open("log_scalars")
        measured = ("throughput/", "time/", "memory/")  # differ between any two runs
        kept = {k: float(v) for k, v in metrics.items() if not k.startswith(measured)}
        self.records.append((step, kept))

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._check_open("log_text")
        self.texts.append((step, tag, text))

    def log_hyperparameters(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        self._check_open("log_hyperparameters")

    def resume(self, step: int) -> None:
        self._check_open("resume")
        self.records[:] = [record for record in self.records if record[0] <= step]

    def flush(self) -> None:
        self._check_open("flush")

    def close(self) -> None:
        self.closed = True

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(step, metrics[name]) for step, metrics in self.records if name in metrics]


class OneProcess:
    """A ``DistributedContext`` of one process, on the CPU."""

    rank = local_rank = node_rank = 0
    world_size = 1
    device = torch.device("cpu")
    is_distributed = False
    is_main_process = is_local_main_process = True

    def __init__(self) -> None:
        self.closes = 0

    def barrier(self) -> None:
        pass

    def all_reduce_mean(self, metrics: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
        return {name: float(value) for name, value in metrics.items()}

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values.detach().clone()

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        return obj

    def all_gather_object(self, obj: T) -> list[T]:
        return [obj]

    def agree(self, flag: bool, mode: Literal["any", "all"] = "any") -> bool:
        return flag

    def wrap(self, module: nn.Module) -> nn.Module:
        return module

    def unwrap(self, module: nn.Module) -> nn.Module:
        return module

    def no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def close(self) -> None:
        self.closes += 1


def _points(count: int, seed: int) -> tuple[list[list[float]], list[float]]:
    draw = random.Random(seed)
    xs = [[draw.gauss(0.0, 1.0) for _ in range(8)] for _ in range(count)]
    weights = [draw.gauss(0.0, 1.0) for _ in range(8)]
    return xs, [sum(w * x for w, x in zip(weights, row, strict=True)) for row in xs]


def _batch(rows: list[list[float]], targets: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(rows), torch.tensor(targets).unsqueeze(1)


class ListBatches:
    """The rest of an epoch of ``ListData``: sized, and counting each batch it hands over."""

    def __init__(self, source: ListData) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.source.batches_per_epoch - self.source.batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        source, size = self.source, self.source.batch_size
        order = list(range(len(source.xs)))
        random.Random(source.seed * 1_000_003 + source.epoch).shuffle(order)
        while source.batch < source.batches_per_epoch:
            chosen = order[source.batch * size : (source.batch + 1) * size]
            source.batch += 1  # counted when handed over: a checkpoint now resumes after it
            yield _batch([source.xs[i] for i in chosen], [source.ys[i] for i in chosen])


class ListData:
    """A ``DataSource`` over plain Python lists: shuffled per (seed, epoch), resumable."""

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = batch_size
        self.seed = self.epoch = self.batch = 0
        self.xs: list[list[float]] = []
        self.ys: list[float] = []
        self.setups = 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.xs) // self.batch_size

    def prepare_data(self) -> None:
        pass

    def setup(self) -> None:
        self.xs, self.ys = _points(128, seed=0)
        self.held_out = _points(40, seed=1)
        self.setups += 1

    def configure(self, *, rank: int, world_size: int, seed: int) -> None:
        assert world_size == 1, "ListData serves one process"
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.batch = epoch, 0

    def train_dataloader(self) -> ListBatches:
        return ListBatches(self)

    def valid_dataloader(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        xs, ys = self.held_out
        return [_batch(xs[i : i + 16], ys[i : i + 16]) for i in range(0, len(xs), 16)]

    def test_dataloader(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.valid_dataloader()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch, self.batch = state_dict["epoch"], state_dict["batch"]


class Evaluated(Linear):
    """``Linear`` with a test step, that can fail in ``train_step`` at a given step."""

    monitor = "loss"

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fail_at = fail_at

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        if state.step == self.fail_at:
            raise RuntimeError(f"failing at step {state.step}")
        return super().train_step(batch, state)

    def test_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        return self.valid_step(batch, step)


# 8 batches an epoch: 20 steps cross two epoch ends; the failure comes mid-epoch.
RUN = {"unit": "iteration", "total": 20, "checkpoint_every": 6, "valid_every": 5, "log_every": 2}


def trainer(run_dir: Path, **objects: Any) -> Trainer:
    # tensorboard= configures the loggers the trainer builds; with the user's logger it is left
    # unset (setting both is refused as a conflict).
    quiet = {} if "metric_logger" in objects else {"tensorboard": False}
    return Trainer(run_dir, **RUN, seed=3, progress=False, **quiet, **objects)


def user_objects(
    bucket: dict[str, Any] | None = None, records: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "checkpoint_store": MemoryStore(bucket, best_metric="loss"),
        "metric_logger": ListLogger(records),
        "distributed": OneProcess(),
    }


def parameters(model: Linear) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.net.state_dict().items()}


def test_each_user_object_conforms() -> None:
    assert isinstance(MemoryStore(), CheckpointStore)
    assert isinstance(ListLogger(), MetricLogger)
    assert isinstance(OneProcess(), DistributedContext)
    assert isinstance(ListData(), DataSource)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A straight run with every user object, and one with Helios' defaults but the data."""
    folder = tmp_path_factory.mktemp("contracts")
    bucket: dict[str, Any] = {}
    records: list[Any] = []
    model = Evaluated()
    result = trainer(folder / "user", **user_objects(bucket, records)).fit(model, ListData())
    default_model = Evaluated()
    trainer(folder / "default").fit(default_model, ListData())
    return {
        "bucket": bucket,
        "records": records,
        "model": model,
        "result": result,
        "default_dir": folder / "default",
        "default_model": default_model,
    }


def test_user_objects_train_exactly_as_the_defaults(straight: dict[str, Any]) -> None:
    assert straight["result"].complete and straight["result"].state.step == RUN["total"]
    assert_nested_equal(parameters(straight["model"]), parameters(straight["default_model"]))
    store = MemoryStore(straight["bucket"])  # a new view: the run's store may be closed
    logger = ListLogger(straight["records"])
    assert_nested_equal(
        store.load()["model"], final_checkpoint(straight["default_dir"])["model"], "model"
    )
    for name in ("train/loss", "valid/loss"):
        series = logger.series(name)
        assert series, name
        assert series == metric_series(straight["default_dir"], name), name
    assert [info.step for info in store.list()] == [6, 12, 18, 20]


def test_a_crash_then_resume_from_the_memory_store_is_exact(
    straight: dict[str, Any], tmp_path: Path
) -> None:
    bucket: dict[str, Any] = {}
    records: list[Any] = []
    with pytest.raises(RuntimeError, match="failing at step 9"):
        trainer(tmp_path, **user_objects(bucket, records)).fit(Evaluated(fail_at=9), ListData())
    assert [info.step for info, _ in bucket.values()] == [6]
    # New objects over the same storage, as a restarted process would build them.
    model = Evaluated()
    result = trainer(tmp_path, **user_objects(bucket, records)).fit(model, ListData())
    assert result.resumed_from == Path("memory", "step-00000006.pt")
    assert result.steps_trained == RUN["total"] - 6
    assert_nested_equal(parameters(model), parameters(straight["model"]))
    assert_nested_equal(
        MemoryStore(bucket).load(), MemoryStore(straight["bucket"]).load(), "checkpoint"
    )
    assert records == straight["records"]  # each step once, none lost


def test_the_same_context_and_data_source_serve_fit_then_test(tmp_path: Path) -> None:
    context, data = OneProcess(), ListData()
    run = Trainer(tmp_path, total=1, progress=False, tensorboard=False, distributed=context)
    run.fit(Evaluated(), data)
    metrics = run.test(Evaluated(), data)
    assert set(metrics) == {"loss"} and metrics["loss"] > 0
    assert context.closes == 0  # the user's context: the user closes it
    assert data.setups == 2


def test_fit_twice_with_the_same_store_and_logger(tmp_path: Path) -> None:
    objects = user_objects()
    run = trainer(tmp_path, **objects)
    first = run.fit(Evaluated(), ListData())
    second = run.fit(Evaluated(), ListData())
    assert first.complete and second.complete and second.steps_trained == 0
    assert not objects["checkpoint_store"].closed and not objects["metric_logger"].closed


def test_fit_then_test_with_the_same_store_and_logger(tmp_path: Path) -> None:
    objects = user_objects()
    run = trainer(tmp_path, **objects)
    run.fit(Evaluated(), ListData())
    metrics = run.test(Evaluated(), ListData())
    best = objects["checkpoint_store"].best()
    assert best is not None and metrics["loss"] == pytest.approx(best.metrics["loss"])
    assert not objects["checkpoint_store"].closed and not objects["metric_logger"].closed


class Unsized(ListData):
    """A DataSource whose training loader is a bare iterator: no ``len()``."""

    def train_dataloader(self) -> Any:
        return iter(ListBatches(self))


def test_a_data_source_without_len_is_refused_naming_the_argument(tmp_path: Path) -> None:
    assert isinstance(Unsized(), DataSource)  # the protocol check alone cannot see it
    with pytest.raises(ConfigurationError, match=r"datamodule: Unsized\.train_dataloader\(\)"):
        Trainer(tmp_path, total=1, progress=False, tensorboard=False).fit(Evaluated(), Unsized())
