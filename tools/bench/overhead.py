"""What Helios costs per step on the path users take, against a hand-written PyTorch loop.

The workload (issue 15): an MLP 64-256-256-10, batch 64, SGD, one thread, a map-style
``TensorDataset`` of 16,384 samples read with ``shuffle=True``.

* **Whole path** (the figure that counts): a ``DataModule`` over the dataset and
  ``Trainer.fit``, against a hand-written loop over ``torch.utils.data.DataLoader`` (same
  dataset, batch size, shuffle): zero_grad, forward, loss, backward, step, a running loss kept
  on the device and logged every 50 steps, ``set_epoch``-style epochs. Measured with
  ``num_workers=0`` and with ``num_workers=2``.
* **Loop only** (labelled so; it skips the data path): both loops get the same pre-collated
  batches from memory, so only the training loop itself is compared.
* **Whole path with random augmentation** (``num_workers=0``): the same, over a dataset whose
  ``__getitem__`` adds ``torch.randn`` noise. Helios seeds every batch so the noise is the same
  for any worker count and on resume (a plain ``TensorDataset`` is known to draw no random
  numbers and is not seeded): this figure shows what that costs.
* **PyTorch Lightning**, where installed, on the whole path (its own ``DataLoader``).

Start-up (loggers, the checkpoint at the end, worker start) is cancelled by timing two run
lengths and taking the slope between the fastest run of each length (interference only adds
time); rounds of every runner are interleaved so drift hits all alike.
With ``num_workers=0`` times are this process's CPU time (on a shared, noisy machine that
measures the work done, where wall time would measure the neighbours); with workers the work is
spread over processes, so wall time is used and the figure is noisier.

    uv run python tools/bench/overhead.py [--rounds 5] [--short 1000] [--long 4000]
        [--workers 0 2] [--no-augment] [--no-loop-only] [--monitors-off]

``--monitors-off`` adds the whole path without the performance monitor
(``Trainer(track_performance=False)``), to show what the monitor costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helios.core import Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Trainer

BATCH, FEATURES, CLASSES, SAMPLES = 64, 64, 10, 16_384
Runner = Callable[[int], float]


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, CLASSES)
    )


def make_dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (SAMPLES,), generator=generator)
    return TensorDataset(x, y)


def make_batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, BATCH, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (count, BATCH), generator=generator)
    return list(zip(x.unbind(), y.unbind(), strict=True))


class Augmented(TensorDataset):
    """The same samples with random noise added in ``__getitem__`` (a random augmentation)."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        """The sample with noise."""
        x, y = super().__getitem__(index)
        return x + 0.01 * torch.randn(FEATURES), y


class Classifier(Model):
    def setup(self) -> None:
        self.net = network()
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)


class Data(DataModule):
    def __init__(self, dataset: TensorDataset, workers: int) -> None:
        super().__init__()
        self.dataset, self.workers = dataset, workers

    def setup(self) -> None:
        self.add_train(
            self.dataset,
            DataLoaderParams(
                batch_size=BATCH,
                shuffle=True,
                num_workers=self.workers,
                persistent_workers=self.workers > 0,
            ),
        )


class InMemoryBatches:
    """A resumable DataSource over pre-collated batches (the loop-only figure)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches, self.epoch, self.position = batches, 0, 0

    def prepare_data(self) -> None:
        pass

    def setup(self) -> None:
        pass

    def configure(self, *, rank: int, world_size: int, seed: int) -> None:
        pass

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def train_dataloader(self) -> Any:
        source = self

        class Loader:
            def __len__(self) -> int:
                return len(source.batches) - source.position

            def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                while source.position < len(source.batches):
                    source.position += 1
                    yield source.batches[source.position - 1]

        return Loader()

    def valid_dataloader(self) -> None:
        return None

    def test_dataloader(self) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch, self.position = state_dict["epoch"], state_dict["position"]


def train_by_hand(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int) -> None:
    """What a careful hand-written loop does per step."""
    net = network()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    running, logged = torch.zeros(()), []
    for step in range(1, steps + 1):
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        running += loss.detach()
        if step % 50 == 0:
            logged.append((step, (running / 50).item()))
            running.zero_()


def epochs_of(loader: DataLoader[Any]) -> Iterator[Any]:
    while True:
        yield from loader


def trainer(run_dir: str, steps: int, *, track_performance: bool = True) -> Trainer:
    return Trainer(
        run_dir,
        unit="iteration",
        total=steps,
        checkpoint_every=10**9,
        log_every=50,
        devices="cpu",
        tensorboard=False,
        progress=False,
        keep_checkpoints=1,
        track_performance=track_performance,
    )


def torch_loader(dataset: TensorDataset, workers: int) -> DataLoader[Any]:
    """What a hand-written loop (and Lightning) reads: torch's own DataLoader, shuffled."""
    return DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def runners(
    dataset: TensorDataset, workers: int, clock: Callable[[], float], *, monitors_off: bool = False
) -> dict[str, Runner]:
    """The whole-path runners: each trains ``steps`` steps and returns the time it took.

    ``monitors_off`` adds ``no-monitors``: Helios without its PerformanceMonitor.
    """

    def hand_written(steps: int) -> float:
        started = clock()
        loader = torch_loader(dataset, workers)
        train_by_hand(epochs_of(loader), steps)
        return clock() - started

    def with_helios(steps: int) -> float:
        with tempfile.TemporaryDirectory() as run_dir:
            started = clock()
            trainer(run_dir, steps).fit(Classifier(), Data(dataset, workers))
            return clock() - started

    def without_monitors(steps: int) -> float:
        with tempfile.TemporaryDirectory() as run_dir:
            started = clock()
            run = trainer(run_dir, steps, track_performance=False)
            run.fit(Classifier(), Data(dataset, workers))
            return clock() - started

    found: dict[str, Runner] = {"hand-written": hand_written, "helios": with_helios}
    if monitors_off:
        found["no-monitors"] = without_monitors
    if importlib.util.find_spec("lightning") is not None:
        found["Lightning"] = lambda steps: with_lightning(dataset, workers, steps, clock)
    return found


def loop_only_runners(clock: Callable[[], float], longest: int) -> dict[str, Runner]:
    batches = make_batches(longest)

    def hand_written(steps: int) -> float:
        started = clock()
        train_by_hand(iter(batches[:steps]), steps)
        return clock() - started

    def with_helios(steps: int) -> float:
        with tempfile.TemporaryDirectory() as run_dir:
            started = clock()
            trainer(run_dir, steps).fit(Classifier(), InMemoryBatches(batches[:steps]))
            return clock() - started

    return {"hand-written": hand_written, "helios": with_helios}


def with_lightning(
    dataset: TensorDataset, workers: int, steps: int, clock: Callable[[], float]
) -> float:
    import lightning.pytorch as pl  # type: ignore[import-not-found]

    class Module(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = network()

        def training_step(self, batch: Any, index: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    with tempfile.TemporaryDirectory() as root:
        started = clock()
        loader = torch_loader(dataset, workers)
        run = pl.Trainer(
            max_steps=steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=50,
            default_root_dir=root,
        )
        run.fit(Module(), train_dataloaders=loader)
        return clock() - started


def measure(found: dict[str, Runner], rounds: int, short: int, long: int) -> dict[str, float]:
    """Per-step time of every runner: the slope between its fastest short and long runs.

    On a noisy machine interference only ever adds time, so each run length's minimum over the
    interleaved rounds is the best estimate of its cost; the slope between the two cancels
    start-up.
    """
    for run in found.values():  # warm-up: imports, allocator, first-call costs
        run(short // 4)
    shortest: dict[str, list[float]] = {name: [] for name in found}
    longest: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(rounds):
        for name, run in found.items():
            longest[name].append(run(long))
            shortest[name].append(run(short))
    return {name: (min(longest[name]) - min(shortest[name])) / (long - short) for name in found}


def report(title: str, per_step: dict[str, float], goal: float) -> None:
    base = per_step["hand-written"]
    print(title)
    for name, value in per_step.items():
        print(f"  {name:>13}: {value * 1e6:8.1f} us/step   ratio {value / base:.3f}")
    print(f"  helios / hand-written: {per_step['helios'] / base:.3f} (goal <= {goal})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--short", type=int, default=1000, help="steps of the short run")
    parser.add_argument("--long", type=int, default=4000, help="steps of the long run")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--no-augment", action="store_true", help="skip the augmented figure")
    parser.add_argument("--no-loop-only", action="store_true", help="skip the loop-only figure")
    parser.add_argument(
        "--monitors-off",
        action="store_true",
        help="also time the whole path with Trainer(track_performance=False)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = make_dataset()
    print(
        f"workload: MLP 64-256-256-10, batch {BATCH}, SGD, 1 thread, TensorDataset of "
        f"{SAMPLES} samples, shuffle=True; per-step slope of {args.short} vs {args.long} steps, "
        f"fastest of {args.rounds} interleaved rounds"
    )
    for workers in args.workers:
        clock = time.process_time if workers == 0 else time.perf_counter
        kind = "CPU time" if workers == 0 else "wall time"
        found = runners(dataset, workers, clock, monitors_off=args.monitors_off)
        per_step = measure(found, args.rounds, args.short, args.long)
        report(
            f"whole path, DataModule + Trainer.fit vs DataLoader + hand-written loop, "
            f"num_workers={workers} ({kind}):",
            per_step,
            1.05,
        )
    if not args.no_augment:
        augmented = Augmented(*dataset.tensors)
        per_step = measure(
            runners(augmented, 0, time.process_time), args.rounds, args.short, args.long
        )
        report(
            "whole path with random augmentation in __getitem__ (seeded per batch), "
            "num_workers=0 (CPU time):",
            per_step,
            1.05,
        )
    if not args.no_loop_only:
        per_step = measure(
            loop_only_runners(time.process_time, args.long), args.rounds, args.short, args.long
        )
        report(
            "loop only (pre-collated batches from memory; skips the data path), CPU time:",
            per_step,
            1.02,
        )
    if importlib.util.find_spec("lightning") is None:
        print("PyTorch Lightning is not installed: no Lightning figure")


if __name__ == "__main__":
    main()
