"""An exponential moving average of the weights, as a callback that resumes exactly.

    python docs/examples/ema_callback.py runs/ema [--stop-at STEP]

Trains a small regression for 24 steps (8 an epoch, a checkpoint every 5) with
``WeightAverage``, a callback keeping an EMA of the network's weights. The average is the
callback's state: saved in every checkpoint, restored on resume. ``--stop-at`` sends SIGTERM to
this process after that step, as a scheduler would: the run checkpoints and exits with status
75; run the command again (without it) to resume.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import TensorDataset

from helios.core import Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Callback, Trainer, TrainerState


class WeightAverage(Callback):
    """An exponential moving average of the weights of ``model.<network>``.

    After every optimizer step: ``average = decay * average + (1 - decay) * weights``. Evaluate
    or export with :meth:`copy_to` for the usually smoother averaged weights.
    """

    def __init__(self, network: str = "net", decay: float = 0.9) -> None:
        self.network = network
        self.decay = decay
        self.average: dict[str, torch.Tensor] = {}
        self.step = -1  # the optimizer step of the last update

    def _weights(self, model: Model) -> dict[str, torch.Tensor]:
        network = getattr(model, self.network)
        return getattr(network, "module", network).state_dict()  # DDP-wrapped or not

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        if state.training.step == self.step:
            return  # inside an accumulation window: no optimizer step yet
        self.step = state.training.step
        with torch.no_grad():
            for name, value in self._weights(model).items():
                if name not in self.average or not value.is_floating_point():
                    self.average[name] = value.detach().clone()
                else:
                    self.average[name].lerp_(value.detach(), 1 - self.decay)

    def copy_to(self, model: Model) -> None:
        """Load the averaged weights into ``model.<network>``."""
        network = getattr(model, self.network)
        getattr(network, "module", network).load_state_dict(self.average)

    def state_dict(self) -> dict[str, Any]:
        return {"average": {k: v.cpu() for k, v in self.average.items()}, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average = {k: v.clone() for k, v in state["average"].items()}
        self.step = state["step"]


class SigtermAt(Callback):
    """Send SIGTERM to this process after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        if state.training.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class Points(DataModule):
    def setup(self) -> None:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(64, 4, generator=generator)
        y = x @ torch.randn(4, 1, generator=generator)
        self.add_train(TensorDataset(x, y), DataLoaderParams(batch_size=8, shuffle=True))


class Regression(Model):
    def setup(self) -> None:
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.05)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        x, y = batch
        return functional.mse_loss(self.net(x), y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--stop-at", type=int, default=None)
    args = parser.parse_args()
    callbacks: list[Callback] = [WeightAverage("net", decay=0.9)]
    if args.stop_at is not None:
        callbacks.append(SigtermAt(args.stop_at))
    result = Trainer(
        args.run_dir,
        unit="iteration",
        total=24,
        checkpoint_every=5,
        log_every=1,
        seed=1,
        devices="cpu",
        progress=False,
        tensorboard=False,
        callbacks=callbacks,
    ).fit(Regression(), Points())
    print(f"trained to step {result.state.step}; EMA of {len(callbacks[0].average)} tensors")


if __name__ == "__main__":
    main()
