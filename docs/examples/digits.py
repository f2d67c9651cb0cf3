"""Train a small network on the digits set bundled with scikit-learn.

A placeholder for the main job until the Trainer lands: a plain PyTorch loop seeded by
``helios.core``. Run it with:

    uv run python docs/examples/digits.py
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

from helios.core import seed_everything


def main() -> None:
    seed_everything(7)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x))
    train, test = order[:1400], order[1400:]
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _epoch in range(30):
        for batch in train.split(64):
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (net(x[test]).argmax(1) == y[test]).float().mean().item()
    print(f"test accuracy: {accuracy:.3f}")


if __name__ == "__main__":
    main()
