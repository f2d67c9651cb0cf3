"""Benchmark: what ``Trainer(compile=...)`` costs and gains on a small transformer.

Trains the same small transformer (a few identical blocks) for ``--steps`` optimizer steps three
ways in one process -- eager, compiled whole (``compile={"regional": False}``) and compiled
block by block (the model names its block class in ``Model.compile_modules``) -- and reports,
for each, the compile time (the first steps' time beyond the steady-state step time, less the
same warm-up excess of the eager run) and the steady-state step time (median of the second half
of the steps), then the ratios. Inductor's
caches are switched off, so every figure is a cold compile, as on a fresh machine. Run from the
repository root:

    uv run python tools/bench/compile.py [--steps 40] [--blocks 4] [--width 128] [--device cpu]
        [--backend inductor] [--mode default]
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")  # cold compiles, every run

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import TensorDataset

from helios.core import Model, TrainingState
from helios.data import DataLoaderParams, DataModule
from helios.trainer import Callback, Trainer, TrainerState

WARMUP_STEPS = 3  # steps that may compile (forward and backward graphs), counted as compile


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and an MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=2)
        shape = (batch, length, self.heads, width // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        attended = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.norm2(x))  # type: ignore[no-any-return]


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int, width: int, blocks: int, length: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(length, width))
        self.blocks = nn.ModuleList(Block(width, heads=4) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # type: ignore[no-any-return]


class LanguageModel(Model):
    compile_modules = (Block,)

    def __init__(self, vocab: int, width: int, blocks: int, length: int) -> None:
        super().__init__()
        self.shape = (vocab, width, blocks, length)

    def setup(self) -> None:
        self.net = TinyTransformer(*self.shape)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-3)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        (tokens,) = batch
        logits = self.net(tokens[:, :-1])
        return functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())


class Tokens(DataModule):
    def __init__(self, vocab: int, length: int, batch_size: int, steps: int) -> None:
        super().__init__()
        self.vocab, self.length, self.batch_size, self.steps = vocab, length, batch_size, steps

    def setup(self) -> None:
        generator = torch.Generator().manual_seed(0)
        count = self.batch_size * self.steps
        tokens = torch.randint(self.vocab, (count, self.length + 1), generator=generator)
        self.add_train(TensorDataset(tokens), DataLoaderParams(batch_size=self.batch_size))


class StepTimes(Callback):
    """Wall and CPU time of every training batch, from its start to its optimizer step's end.

    The CPU time of this process (all its threads) is the steadier figure on a shared machine;
    it leaves out inductor's compiler subprocesses, so compile time is measured in wall time.
    """

    def __init__(self, synchronize: bool) -> None:
        self.synchronize = synchronize
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.started = self.cpu_started = 0.0

    def on_training_batch_start(self, state: TrainerState, model: Model) -> None:
        if self.synchronize:
            torch.cuda.synchronize()
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        if self.synchronize:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.started)
        self.cpu_times.append(time.process_time() - self.cpu_started)


def train(
    args: argparse.Namespace, compile_setting: bool | dict[str, Any]
) -> tuple[float, float, float]:
    """Warm-up seconds beyond the steady state, steady seconds per step (wall, CPU) of one way."""
    torch._dynamo.reset()
    timer = StepTimes(synchronize=args.device == "cuda")
    length, vocab = 64, 256
    with tempfile.TemporaryDirectory(prefix="helios-bench-compile-") as folder:
        trainer = Trainer(
            Path(folder),
            unit="iteration",
            total=args.steps,
            checkpoint_every=args.steps,
            log_every=args.steps,
            devices=args.device,
            tensorboard=False,
            progress=False,
            callbacks=[timer],
            compile=compile_setting,
        )
        trainer.fit(
            LanguageModel(vocab, args.width, args.blocks, length),
            Tokens(vocab, length, batch_size=16, steps=args.steps),
        )
    steady = statistics.median(timer.times[args.steps // 2 :])
    steady_cpu = statistics.median(timer.cpu_times[args.steps // 2 :])
    return sum(timer.times[:WARMUP_STEPS]) - WARMUP_STEPS * steady, steady, steady_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--mode", default=None)
    args = parser.parse_args()
    if args.steps < 2 * WARMUP_STEPS + 2:
        parser.error(f"--steps must be at least {2 * WARMUP_STEPS + 2}")
    args.device = "cpu" if args.device == "cpu" else 1
    options: dict[str, Any] = {"backend": args.backend, "mode": args.mode}
    threads = torch.get_num_threads()
    print(
        f"small transformer: {args.blocks} blocks of width {args.width}, batch 16 x 64 tokens, "
        f"{args.steps} steps on {'cpu' if args.device == 'cpu' else 'cuda'} "
        f"({threads} threads), backend={args.backend}, mode={args.mode}"
    )
    results = {
        "eager": train(args, False),
        "compiled": train(args, {**options, "regional": False}),
        "regional": train(args, {**options, "regional": True}),
    }
    eager_warmup, eager_step, eager_cpu = results["eager"]
    print(
        f"    eager: warm-up {eager_warmup:6.2f} s    step {eager_step * 1000:8.2f} ms "
        f"(CPU {eager_cpu * 1000:8.2f} ms)"
    )
    for name in ("compiled", "regional"):
        warmup, steady, cpu = results[name]
        results[name] = (warmup - eager_warmup, steady, cpu)
        print(
            f"{name:>9}: compile {warmup - eager_warmup:6.2f} s    step {steady * 1000:8.2f} ms "
            f"(CPU {cpu * 1000:8.2f} ms)"
        )
    whole_compile, whole_step, whole_cpu = results["compiled"]
    regional_compile, regional_step, regional_cpu = results["regional"]
    for name, step, cpu in (
        ("compiled", whole_step, whole_cpu),
        ("regional", regional_step, regional_cpu),
    ):
        print(
            f"step time {name} / eager:        {step / eager_step:.2f} (CPU {cpu / eager_cpu:.2f})"
        )
    ratio = f"{regional_compile / whole_compile:.2f}" if whole_compile > 0.01 else "n/a"
    print(f"compile time regional / compiled:  {ratio}")


if __name__ == "__main__":
    main()
