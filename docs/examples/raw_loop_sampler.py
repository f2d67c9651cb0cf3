"""Helios' resumable sampler in a training loop of your own: no Trainer, no DataModule.

Needs only ``helios-data`` (and torch). The loop checkpoints every few batches, mid-epoch; kill
it at any moment and run it again: it continues with the first batch it had not trained on, with
the same augmentation and dropout masks, and ends with exactly the weights of a run that never
stopped, whatever the number of loader workers.

    python docs/examples/raw_loop_sampler.py --dir runs/raw                  # trains, or resumes
    python docs/examples/raw_loop_sampler.py --dir runs/raw --stop-after 13  # dies after 13 batches

The last line printed is the SHA-256 of the final weights: compare it between runs.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset

from helios.core import capture_rng_state, restore_rng_state, seed_everything
from helios.data import ResumableDataLoader, ResumableSampler

EPOCHS = 3
SAVE_EVERY = 5  # batches


class NoisyPoints(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A fixed regression problem; every read adds fresh noise (random augmentation)."""

    def __init__(self, size: int = 200) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, 4, generator=generator)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # torch's global RNG: the loader seeds it for each sample from (seed, epoch, position).
        return self.x[index] + 0.05 * torch.randn(4), self.y[index]


def weights_digest(net: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the checkpoint goes")
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    parser.add_argument("--stop-after", type=int, help="die after this many batches (a crash)")
    args = parser.parse_args()
    checkpoint = args.dir / "checkpoint.pt"
    args.dir.mkdir(parents=True, exist_ok=True)

    seed_everything(7)  # the initial weights
    dataset = NoisyPoints()
    sampler = ResumableSampler(dataset, shuffle=True, seed=7)
    loader = ResumableDataLoader(dataset, sampler, batch_size=16, num_workers=args.workers)
    net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    step = 0

    if checkpoint.exists():  # resume: everything that moves, including the random generators
        state = torch.load(checkpoint, weights_only=True)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["data"])  # epoch and samples consumed: O(1), no skipping
        restore_rng_state(state["rng"])  # dropout continues as if never stopped
        step = state["step"]
        print(f"resumed at step {step}: epoch {sampler.epoch}, {sampler.consumed} samples in")

    def save() -> None:
        state = {
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "data": loader.state_dict(),
            "rng": capture_rng_state(),
            "step": step,
        }
        torch.save(state, checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)  # never a half-written checkpoint

    batches_here = 0
    for epoch in range(sampler.epoch, EPOCHS):
        loader.set_epoch(epoch)  # a no-op when resuming inside this epoch
        for x, y in loader:  # the batches this epoch has left
            loss = functional.mse_loss(net(x).squeeze(1), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            batches_here += 1
            if args.stop_after is not None and batches_here == args.stop_after:
                raise SystemExit(f"died after {batches_here} batches (step {step}), unsaved")
            if step % SAVE_EVERY == 0 and len(loader) > 0:  # mid-epoch checkpoint
                save()
        print(f"epoch {epoch}: {step} steps, last loss {loss.item():.4f}")
        loader.set_epoch(epoch + 1)  # the end of an epoch is saved as the start of the next
        save()
    print(f"weights sha256: {weights_digest(net)}")


if __name__ == "__main__":
    main()
