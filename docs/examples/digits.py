"""Train a small CNN on the handwritten digits bundled with scikit-learn, end to end.

The main job of Helios: a ``DataModule`` with random augmentation in loader workers, a ``Model``
with a CNN, AdamW and a one-cycle schedule, and a ``Trainer`` that validates, checkpoints,
logs to TensorBoard, tests the best checkpoint and exports the network to ONNX (checked in
onnxruntime). No download: the 1,797 8x8 digits ship inside scikit-learn.

Run it (about a minute on 2 CPU cores):

    uv run python docs/examples/digits.py            # trains, or resumes where it stopped
    uv run python docs/examples/digits.py --fresh    # deletes the run folder and starts over

or from its config file, ``digits.toml`` beside it, which builds the same objects:

    uv run helios fit docs/examples/digits.toml

Stop it at any moment (Ctrl-C): it checkpoints and exits; run it again and it resumes,
ending bitwise identical to a run that never stopped. Run it once more after it finished and it
reports the run complete instead of training again.
"""

from __future__ import annotations

import argparse
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset

from helios.core import ExportTarget, Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Trainer

RUN_DIR = Path("runs/digits")


class DigitImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """8x8 grey images in [0, 1]; with ``augment``, a random shift and pixel noise."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool) -> None:
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.augment:  # seeded per batch by helios.data: identical for any worker count
            dx, dy = torch.randint(-1, 2, (2,)).tolist()
            image = torch.roll(image, shifts=(dy, dx), dims=(1, 2))
            image = (image + 0.05 * torch.randn_like(image)).clamp(0, 1)
        return image, self.labels[index]


class Digits(DataModule):
    """Train, validation and test splits of the scikit-learn digits (fixed split)."""

    safe_to_change_on_resume = ("workers",)  # batches do not depend on the number of workers

    def __init__(self, workers: int = 2, batch_size: int = 64) -> None:
        super().__init__()
        self.workers, self.batch_size = workers, batch_size

    def setup(self) -> None:
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        train, valid, test = order[:1300], order[1300:1550], order[1550:]
        self.add_train(
            DigitImages(images[train], labels[train], augment=True),
            DataLoaderParams(
                batch_size=self.batch_size,
                shuffle=True,
                num_workers=self.workers,
                persistent_workers=self.workers > 0,
            ),
        )
        self.add_valid(DigitImages(images[valid], labels[valid], False), DataLoaderParams(256))
        self.add_test(DigitImages(images[test], labels[test], False), DataLoaderParams(256))


class SmallCNN(nn.Sequential):
    def __init__(self, width: int = 32, dropout: float = 0.25) -> None:
        super().__init__(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * width * 4 * 4, 10),
        )


EPOCHS = 12
STEPS_PER_EPOCH = 21  # ceil(1300 / 64)
ADAMW = functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=1e-4)
ONE_CYCLE = functools.partial(
    torch.optim.lr_scheduler.OneCycleLR, max_lr=3e-3, total_steps=EPOCHS * STEPS_PER_EPOCH
)


class Classifier(Model):
    """The CNN, its optimizer and schedule; keeps the checkpoint with the best accuracy.

    The network, optimizer and schedule are given as factories (a config file's tables become
    them, see ``digits.toml``) and made in ``setup``, after the trainer seeded the RNGs.
    """

    monitor = "accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        net: Callable[..., nn.Module] = SmallCNN,
        optimizer: Callable[..., torch.optim.Optimizer] = ADAMW,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] = ONE_CYCLE,
    ) -> None:
        super().__init__()
        self.make_net, self.make_optimizer, self.make_scheduler = net, optimizer, scheduler

    def setup(self) -> None:
        self.net = self.make_net()
        self.optimizer = self.make_optimizer(self.net.parameters())
        self.scheduler = self.make_scheduler(self.optimizer)

    def train_step(self, batch: Any, state: TrainingState) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = self.net(images)
        loss = functional.cross_entropy(logits, labels)
        return {"loss": loss, "accuracy": (logits.argmax(1) == labels).float().mean()}

    def valid_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = self.net(images)
        return {
            "loss": functional.cross_entropy(logits, labels),
            "accuracy": (logits.argmax(1) == labels).float().mean(),
        }

    def test_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        return self.valid_step(batch, step)

    def export_target(self) -> ExportTarget:
        return ExportTarget(
            self.net, (torch.zeros(2, 1, 8, 8),), input_names=["image"], output_names=["logits"]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help=f"default {RUN_DIR}")
    args = parser.parse_args()
    if args.fresh and args.run_dir.exists():
        shutil.rmtree(args.run_dir)

    trainer = Trainer(
        run_dir=args.run_dir,
        unit="epoch",
        total=EPOCHS,
        log_every=7,
        seed=7,
        progress=True,
    )
    result = trainer.fit(Classifier(), Digits())
    if result.steps_trained == 0:
        print(f"the run in {args.run_dir} is already complete; --fresh starts a new one")
    elif result.resumed_from is not None:
        print(f"resumed from {result.resumed_from} and trained {result.steps_trained} steps")
    metrics = trainer.test(Classifier(), Digits())
    report = trainer.export(Classifier())
    print(f"test accuracy: {metrics['accuracy']:.3f}")
    print(f"checkpoints:   {args.run_dir / 'checkpoints'}")
    print(f"logs:          {args.run_dir / 'logs'}, {args.run_dir / 'metrics.jsonl'}")
    print(f"tensorboard:   uv run tensorboard --logdir {args.run_dir / 'tensorboard'}")
    print(f"onnx:          {report.path} (onnxruntime max abs error {report.max_abs_error:.2e})")


if __name__ == "__main__":
    main()
