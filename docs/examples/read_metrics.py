"""Where a run's metrics go, and how to read them back: JSON lines, TensorBoard, your own logger.

    python docs/examples/read_metrics.py runs/metrics

Trains a tiny model for 2 epochs with the default loggers (TensorBoard and ``metrics.jsonl``),
reads both back, then trains it again with a ``MetricLogger`` of its own, which replaces them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional
from torch.utils.data import TensorDataset

from helios.core import MetricLogger, Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Trainer


class Line(DataModule):
    def setup(self) -> None:
        x = torch.linspace(-1, 1, 64).unsqueeze(1)
        self.add_train(TensorDataset(x, 2 * x), DataLoaderParams(batch_size=8, shuffle=True))
        self.add_valid(TensorDataset(x, 2 * x), DataLoaderParams(batch_size=32))


class Fit(Model):
    def setup(self) -> None:
        self.net = nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        x, y = batch
        prediction = self.net(x)
        # "loss" is optimised; every entry is logged as train/<name>, averaged over log_every steps
        return {"loss": functional.mse_loss(prediction, y), "mae": (prediction - y).abs().mean()}

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": functional.mse_loss(self.net(x), y)}  # logged as valid/loss


class PrintLogger:
    """A MetricLogger of your own: any object with these six methods."""

    def log_scalars(self, metrics: Mapping[str, float], step: int) -> None:
        print(
            f"step {step}: " + ", ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items()))
        )

    def log_text(self, tag: str, text: str, step: int) -> None:
        print(f"step {step}: {tag}: {text}")

    def log_hyperparameters(
        self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        print("hyper-parameters:", dict(params))

    def resume(self, step: int) -> None:
        print(f"resuming after step {step}")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the parent folder of the two runs")
    folder = parser.parse_args().folder

    run = folder / "default"
    Trainer(run, unit="epoch", total=2, log_every=4, progress=False).fit(Fit(), Line())

    for line in (run / "metrics.jsonl").read_text().splitlines():
        print("jsonl:", json.loads(line))

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for tag in sorted(events.Tags()["scalars"]):
        print("tensorboard:", tag, [event.step for event in events.Scalars(tag)])

    assert isinstance(PrintLogger(), MetricLogger)  # the protocol checks the methods are there
    own = Trainer(
        folder / "own",
        unit="epoch",
        total=1,
        log_every=4,
        progress=False,
        metric_logger=PrintLogger(),
    )
    own.fit(Fit(), Line())


if __name__ == "__main__":
    main()
