"""``helios verify-resume``: does a user's Model and DataModule resume bitwise identically?

Three runs of the same job, each in a fresh process, in a temporary folder:

1. A: straight through ``steps`` optimizer steps.
2. A': straight again — if it differs from A, the job is not reproducible at all, and no
   checkpoint can make it resumable (unseeded randomness, non-deterministic kernels).
3. B: stopped by SIGTERM at a random step that is neither a checkpoint step nor an epoch
   boundary (it checkpoints there and exits), then resumed in a fresh process to the end.

Every tensor of the final model state (parameters, optimizer and scheduler state) and the
logged loss series are compared exactly.

This module is also the child process: ``python -m helios.trainer._verify SETTINGS_JSON``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from helios.core import Model, TrainingState

__all__ = ["first_difference", "verify"]

_LIKELY_CAUSES = {
    "not_reproducible": (
        "two straight runs already differ, so no checkpoint can make this job resumable. "
        "Likely causes: unseeded randomness in user code (random.Random() or "
        "np.random.default_rng() without a seed, seeds from time or os.urandom; use the global "
        "RNGs or helios.core.numpy_generator(), which Helios seeds and checkpoints), or "
        "non-deterministic kernels (Trainer(deterministic=True))."
    ),
    "not_resumable": (
        "straight runs agree, but the resumed one does not. Likely causes: state kept outside "
        "the discovered attributes (a counter, a buffer or a generator held in a list or dict, "
        "not an nn.Module / Optimizer / LRScheduler attribute: save it with "
        "extra_state_dict()), randomness drawn from a private generator that is not "
        "checkpointed (a seeded random.Random() or torch.Generator() restarts from its seed), "
        "or data whose order or augmentation is not a function of the seed."
    ),
}


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The path of the first tensor or value that differs between two nested states."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
        return None if same else path or "/"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path} (keys differ)"
        for key in a:
            found = first_difference(a[key], b[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{path} (lengths differ)"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{index}]")
            if found:
                return found
        return None
    return None if a == b else path or "/"


def _child_settings(
    run_dir: Path, model: str, data: str, steps: int, workers: int | None, seed: int, every: int
) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "model": model,
        "data": data,
        "steps": steps,
        "workers": workers,
        "seed": seed,
        "checkpoint_every": every,
        "stop_at": None,
    }


def _run_child(settings: dict[str, Any], expect: int) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "helios.trainer._verify", json.dumps(settings)],
        capture_output=True,
        text=True,
        check=False,
        cwd=os.getcwd(),
    )
    if completed.returncode != expect:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-15:])
        raise RuntimeError(
            f"the training process exited with status {completed.returncode} "
            f"(expected {expect}):\n{tail}"
        )


def _final(run_dir: Path) -> dict[str, Any]:
    from helios.trainer._wiring import open_checkpoint_folder

    store = open_checkpoint_folder(run_dir / "checkpoints")
    try:
        state: dict[str, Any] = store.load()
        return state
    finally:
        store.close()


def _losses(run_dir: Path) -> dict[int, float]:
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            losses[int(record["step"])] = float(record["train/loss"])
    return losses


def _compare(a: Path, b: Path) -> tuple[int | None, str | None]:
    """The first step whose loss differs and the first differing tensor, or ``None`` each."""
    losses_a, losses_b = _losses(a), _losses(b)
    step = next(
        (
            s
            for s in sorted(losses_a.keys() | losses_b.keys())
            if losses_a.get(s) != losses_b.get(s)
        ),
        None,
    )
    tensor = first_difference(_final(a)["model"], _final(b)["model"], "model")
    return step, tensor


def _epoch_length(data_spec: str, workers: int | None, seed: int) -> int:
    from helios.trainer._cli import load_class

    data = load_class(data_spec)()
    data.configure(rank=0, world_size=1, seed=seed)
    data.setup()
    _override_workers(data, workers)
    loader = data.train_dataloader()
    if loader is None:
        raise RuntimeError(f"{data_spec} has no training data")
    return len(loader)


def _override_workers(data: Any, workers: int | None) -> None:
    if workers is not None:
        data.replace_train_params(num_workers=workers, persistent_workers=False)


def verify(model: str, data: str, *, steps: int, workers: int | None = None, seed: int = 0) -> int:
    """Run the three trainings and print the verdict; 0 when identical, 1 otherwise."""
    epoch_length = _epoch_length(data, workers, seed)
    every = max(2, steps // 4)
    candidates = [s for s in range(2, steps) if s % every and s % epoch_length]
    if not candidates:
        raise RuntimeError(
            f"no step in 2..{steps - 1} is both off the checkpoint cadence ({every}) and off an "
            f"epoch boundary ({epoch_length} batches); use more --steps"
        )
    stop = random.SystemRandom().choice(candidates)
    with tempfile.TemporaryDirectory(prefix="helios-verify-") as folder:
        root = Path(folder)
        runs = {name: root / name for name in ("straight", "again", "resumed")}
        print(f"training {model} on {data}: {steps} steps, {epoch_length} batches an epoch")
        for name in ("straight", "again"):
            _run_child(_child_settings(runs[name], model, data, steps, workers, seed, every), 0)
        resumed = _child_settings(runs["resumed"], model, data, steps, workers, seed, every)
        _run_child({**resumed, "stop_at": stop}, 75)
        _run_child(resumed, 0)
        print(f"stopped at step {stop} (checkpoints every {every}), resumed in a fresh process")
        repeat_step, repeat_tensor = _compare(runs["straight"], runs["again"])
        step, tensor = _compare(runs["straight"], runs["resumed"])
    if step is None and tensor is None:
        print("resumable: identical")
        return 0
    print("resumable: NO, the runs diverge")
    if step is not None:
        print(f"  first differing loss: step {step}")
    if tensor is not None:
        print(f"  first differing tensor: {tensor}")
    cause = (
        "not_reproducible"
        if repeat_step is not None or repeat_tensor is not None
        else "not_resumable"
    )
    print(f"  likely cause: {_LIKELY_CAUSES[cause]}")
    return 1


def _child(settings: dict[str, Any]) -> None:
    from helios.trainer import Trainer
    from helios.trainer._cli import load_class

    model_class = load_class(settings["model"])
    data = load_class(settings["data"])()
    stop_at = settings["stop_at"]
    workers = settings["workers"]
    if workers is not None:
        original_setup = data.setup

        def setup() -> None:
            original_setup()
            _override_workers(data, workers)

        data.setup = setup
    model: Model = model_class()
    if stop_at is not None:
        original_end = model.on_training_batch_end

        def on_training_batch_end(state: TrainingState) -> None:
            original_end(state)
            if state.step == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)

        model.on_training_batch_end = on_training_batch_end  # type: ignore[method-assign]
    Trainer(
        settings["run_dir"],
        unit="iteration",
        total=settings["steps"],
        checkpoint_every=settings["checkpoint_every"],
        log_every=1,
        seed=settings["seed"],
        devices="cpu",
        tensorboard=False,
        progress=False,
        keep_checkpoints=2,
    ).fit(model, data)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
