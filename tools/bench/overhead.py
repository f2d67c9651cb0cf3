"""Per-step overhead of ``Trainer.fit`` against a hand-written PyTorch loop.

The workload (issue 8): an MLP 64-256-256-10, batch 64, SGD, one thread. Both loops get the
same pre-collated batches from memory, so what is measured is the training loop itself, not
the data pipeline. The hand-written loop does what a careful one does: zero_grad, forward,
loss, backward, step, a running loss kept on the device and logged every 50 steps.

Start-up (process group, loggers, checkpoint at the end) is cancelled by timing two run lengths
and taking the slope; rounds of baseline and trainer are interleaved so drift hits both alike.
Times are the CPU time of this process (one thread, no workers): on a shared, noisy machine
that measures the work done, where wall time would measure the neighbours.
Printed: per-step times, the ratio trainer / hand-written (goal <= 1.02) and, where PyTorch
Lightning is installed, its ratio on the same workload.

    uv run python tools/bench/overhead.py [--rounds 5] [--short 300] [--long 1500]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from helios.core import Model, TrainingState
from helios.trainer import Trainer

BATCH, FEATURES, CLASSES = 64, 64, 10


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, CLASSES)
    )


def make_batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, BATCH, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (count, BATCH), generator=generator)
    return list(zip(x.unbind(), y.unbind(), strict=True))


class InMemoryBatches:
    """A resumable DataSource over pre-collated batches: one epoch is all of them."""

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


class Classifier(Model):
    def setup(self) -> None:
        self.net = network()
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)


def hand_written(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    started = time.process_time()
    net = network()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    running, logged = torch.zeros(()), []
    for step, (x, y) in enumerate(batches, start=1):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        running += loss.detach()
        if step % 50 == 0:
            logged.append((step, (running / 50).item()))
            running.zero_()
    return time.process_time() - started


def with_trainer(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.process_time()
        Trainer(
            run_dir,
            unit="iteration",
            total=len(batches),
            checkpoint_every=10**9,
            log_every=50,
            devices="cpu",
            tensorboard=False,
            progress=False,
            keep_checkpoints=1,
        ).fit(Classifier(), InMemoryBatches(batches))
        return time.process_time() - started


def with_lightning(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
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
        started = time.process_time()
        trainer = pl.Trainer(
            max_steps=len(batches),
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=50,
            default_root_dir=root,
        )
        trainer.fit(Module(), train_dataloaders=batches)
        return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--short", type=int, default=300, help="steps of the short run")
    parser.add_argument("--long", type=int, default=1500, help="steps of the long run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runners = {"hand-written": hand_written, "helios Trainer": with_trainer}
    if importlib.util.find_spec("lightning") is not None:
        runners["Lightning"] = with_lightning
    short, long = make_batches(args.short), make_batches(args.long)
    for run in runners.values():  # warm-up: imports, allocator, first-call costs
        run(short)
    per_step: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            slope = (run(long) - run(short)) / (args.long - args.short)
            per_step[name].append(slope)
    base = statistics.median(per_step["hand-written"])
    print(f"workload: MLP 64-256-256-10, batch {BATCH}, SGD, 1 thread; {args.rounds} rounds")
    for name, slopes in per_step.items():
        median = statistics.median(slopes)
        print(f"{name:>15}: {median * 1e6:8.1f} us/step   ratio {median / base:.3f}")
    ratio = statistics.median(per_step["helios Trainer"]) / base
    print(f"helios Trainer / hand-written: {ratio:.3f} (goal <= 1.02)")
    if "Lightning" not in per_step:
        print("PyTorch Lightning is not installed: no Lightning figure")


if __name__ == "__main__":
    main()
