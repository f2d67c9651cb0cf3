"""``helios verify-resume``: does a user's Model and DataModule resume bitwise identically?

Runs of the same job, each in a fresh process, in a temporary folder:

1. A: straight through ``steps`` optimizer steps.
2. One run per way a real job stops, each then resumed in a fresh process to the end:

   - ``SIGTERM mid-epoch``: at a random step that is neither a checkpoint step nor an epoch
     boundary (it finishes the step, checkpoints and exits 75);
   - ``SIGKILL between checkpoints``: killed at such a step, no checkpoint at the stop (it
     resumes from the last periodic one and repeats the steps after it);
   - ``SIGTERM at an epoch's last batch`` (when an epoch ends before the last step);
   - ``SIGTERM at the last step``: the end-of-run work must happen anyway.

3. Only when a stopped run differs: A', straight again. If it differs from A too, the job is not
   reproducible at all, and no checkpoint can make it resumable (unseeded randomness,
   non-deterministic kernels).

Compared exactly: the whole ``metrics.jsonl`` series (train and valid, every record once; not
the wall time nor the measured ``throughput/``, ``time/`` and ``memory/`` figures) and
the final checkpoint (model with its optimizers and schedulers, training state, data position,
trainer state, RNG states). The verdict names the stop kinds that exposed a difference.

This module is also the child process: ``python -m helios.trainer._verify SETTINGS_JSON``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from helios.core import ConfigurationError, Model
from helios.trainer._callbacks import Callback, TrainerState

__all__ = ["STOP_KEYS", "Difference", "StopKind", "first_difference", "stop_kinds", "verify"]

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
        "or data whose order or augmentation is not a function of the seed. A difference "
        "exposed only by stops at an epoch's end or by SIGKILL often comes from "
        "on_training_epoch_start drawing from such a generator."
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


@dataclasses.dataclass(frozen=True)
class StopKind:
    """One way a real job stops, at one step.

    Attributes:
        name: what the report calls it.
        step: the optimizer step after which the process is signalled.
        signal_name: ``"SIGTERM"`` or ``"SIGKILL"``.
        exit_status: what the stopped process must exit with.
        key: how ``--stops`` names it (one of :data:`STOP_KEYS`).
    """

    name: str
    step: int
    signal_name: str
    exit_status: int
    key: str = ""


STOP_KEYS = ("sigterm", "sigkill", "epoch-end", "last-step")
"""The stop kinds by the names ``helios verify-resume --stops`` takes, in the order they run."""


def stop_kinds(
    steps: int,
    every: int,
    epoch_length: int,
    chooser: random.Random,
    only: Collection[str] = STOP_KEYS,
) -> list[StopKind]:
    """The stops to try for a run of ``steps`` steps, checkpoints every ``every``.

    ``only`` keeps the kinds of those :data:`STOP_KEYS` (an epoch-end stop exists only when an
    epoch ends before the last step).

    Raises:
        ConfigurationError: no step is off both the checkpoint cadence and the epoch
            boundaries.
    """
    between = [s for s in range(2, steps) if s % every and s % epoch_length]
    if not between:
        raise ConfigurationError(
            f"no step in 2..{steps - 1} is both off the checkpoint cadence ({every}) and off an "
            f"epoch boundary ({epoch_length} batches); use more --steps"
        )
    kinds = [
        StopKind("SIGTERM mid-epoch", chooser.choice(between), "SIGTERM", 75, "sigterm"),
        StopKind("SIGKILL between checkpoints", chooser.choice(between), "SIGKILL", -9, "sigkill"),
    ]
    epoch_ends = list(range(epoch_length, steps, epoch_length))
    if epoch_ends:
        kinds.append(
            StopKind(
                "SIGTERM at an epoch's last batch",
                chooser.choice(epoch_ends),
                "SIGTERM",
                75,
                "epoch-end",
            )
        )
    kinds.append(StopKind("SIGTERM at the last step", steps, "SIGTERM", 0, "last-step"))
    return [kind for kind in kinds if kind.key in only]


def _child_settings(
    run_dir: Path,
    objects: dict[str, str | None],
    steps: int,
    workers: int | None,
    seed: int,
    every: int,
    compile_networks: bool = False,
) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        **objects,
        "compile": compile_networks,
        "steps": steps,
        "workers": workers,
        "seed": seed,
        "checkpoint_every": every,
        "stop_at": None,
        "stop_signal": "SIGTERM",
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
    from helios.trainer._checkpoint import read
    from helios.trainer._wiring import open_checkpoint_folder

    store = open_checkpoint_folder(run_dir / "checkpoints")
    try:
        return read(store.load(), run_dir)
    finally:
        store.close()


MEASURED = ("throughput/", "time/", "memory/")
"""What measures the machine (the wall time, the PerformanceMonitor's metrics): not compared."""


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k != "time" and not k.startswith(MEASURED)}
        for line in lines
    ]


_PARALLEL = 2  # training processes at a time


@dataclasses.dataclass(frozen=True)
class Difference:
    """Where two runs first differ (``None``: they agree there).

    Attributes:
        record: the first differing ``metrics.jsonl`` record, as ``"step N (names)"``.
        tensor: the path of the first differing value of the final checkpoint.
    """

    record: str | None
    tensor: str | None

    @property
    def identical(self) -> bool:
        """Whether the runs agree everywhere."""
        return self.record is None and self.tensor is None


def _first_record_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str | None:
    for index in range(max(len(a), len(b))):
        left = a[index] if index < len(a) else None
        right = b[index] if index < len(b) else None
        if left == right:
            continue
        if left is None or right is None:
            extra = left if right is None else right
            assert extra is not None
            which = "the straight run" if right is None else "the resumed run"
            return f"step {extra.get('step')} (only {which} has record {index + 1})"
        names = sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))
        return f"step {left.get('step')} ({', '.join(names)})"
    return None


def _compare(a: Path, b: Path) -> Difference:
    """The first differing metric record and checkpoint value of two runs."""
    record = _first_record_difference(_records(a), _records(b))
    final_a, final_b = _final(a), _final(b)
    from helios.trainer._checkpoint import COMPARED

    tensor = first_difference(
        {k: final_a.get(k) for k in COMPARED}, {k: final_b.get(k) for k in COMPARED}
    )
    return Difference(record, tensor.lstrip("/") if tensor else None)


def _build(settings: dict[str, Any], what: str) -> Any:
    from helios.data import DataModule
    from helios.trainer._objects import build

    if what == "model":
        return build(
            settings["model"], settings["model_args"], "--model", Model, "helios.core.Model"
        )
    return build(
        settings["data"], settings["data_args"], "--data", DataModule, "helios.data.DataModule"
    )


def _epoch_length(objects: dict[str, Any], workers: int | None, seed: int) -> int:
    data = _build(objects, "data")
    data_spec = objects["data"]
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


def verify(
    model: str,
    data: str,
    *,
    steps: int,
    workers: int | None = None,
    seed: int = 0,
    model_args: str | None = None,
    data_args: str | None = None,
    stops: Collection[str] = STOP_KEYS,
    compile_networks: bool = False,
) -> int:
    """Run the trainings and print the verdict; 0 when identical, 1 otherwise.

    ``model`` and ``data`` name a class or factory (``module:Name``, ``file.py:Name``), called
    with the keyword arguments of the JSON objects ``model_args`` and ``data_args``. ``stops``
    chooses the stop kinds to try (all by default; see :data:`STOP_KEYS`). With
    ``compile_networks`` every run trains with ``Trainer(compile=True)``.
    """
    objects = {"model": model, "model_args": model_args, "data": data, "data_args": data_args}
    epoch_length = _epoch_length(objects, workers, seed)
    every = max(2, steps // 4)
    chooser = random.Random(random.SystemRandom().random())
    kinds = stop_kinds(steps, every, epoch_length, chooser, stops)
    if not kinds:
        raise ConfigurationError(
            f"none of the stops {', '.join(stops)} applies to {steps} steps of "
            f"{epoch_length} batches an epoch (an epoch-end stop needs an epoch to end before "
            "the last step); use more --steps or other --stops"
        )
    differences: dict[str, Difference] = {}
    with tempfile.TemporaryDirectory(prefix="helios-verify-") as folder:
        root = Path(folder)

        def settings(name: str) -> dict[str, Any]:
            return _child_settings(
                root / name, objects, steps, workers, seed, every, compile_networks
            )

        print(f"training {model} on {data}: {steps} steps, {epoch_length} batches an epoch")
        stopped = {f"stopped-{number}": kind for number, kind in enumerate(kinds)}
        first_runs = [(settings("straight"), 0)] + [
            (
                {**settings(name), "stop_at": kind.step, "stop_signal": kind.signal_name},
                kind.exit_status,
            )
            for name, kind in stopped.items()
        ]
        resumes = [(settings(name), 0) for name, kind in stopped.items() if kind.exit_status]
        # Independent processes: two at a time, so the check takes half as long on two cores.
        with concurrent.futures.ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
            for runs in (first_runs, resumes):
                list(pool.map(lambda run: _run_child(*run), runs))
        for name, kind in stopped.items():
            difference = _compare(root / "straight", root / name)
            differences[kind.name] = difference
            verdict = "identical" if difference.identical else "DIFFERS"
            print(f"  {kind.name} (after step {kind.step}), resumed: {verdict}")
        repeat: Difference | None = None
        if not all(d.identical for d in differences.values()):
            _run_child(settings("again"), 0)
            repeat = _compare(root / "straight", root / "again")
    print(f"checkpoints every {every} steps; each stopped run resumed in a fresh process")
    exposing = [name for name, d in differences.items() if not d.identical]
    if not exposing:
        print("resumable: identical")
        return 0
    print(f"resumable: NO, the runs diverge; exposed by: {'; '.join(exposing)}")
    first = differences[exposing[0]]
    if first.record is not None:
        print(f"  first differing metric record: {first.record}")
    if first.tensor is not None:
        print(f"  first differing tensor: {first.tensor}")
    cause = "not_reproducible" if repeat is not None and not repeat.identical else "not_resumable"
    print(f"  likely cause: {_LIKELY_CAUSES[cause]}")
    return 1


class _SignalAt(Callback):
    """Send ``stop_signal`` to this process after optimizer step ``step`` (as a scheduler would)."""

    def __init__(self, step: int, stop_signal: signal.Signals) -> None:
        self.step, self.stop_signal = step, stop_signal

    def on_training_batch_end(self, state: TrainerState, model: Model) -> None:
        if state.training.step == self.step:
            os.kill(os.getpid(), self.stop_signal)


def _child(settings: dict[str, Any]) -> None:
    from helios.trainer import Trainer

    model = _build(settings, "model")
    data = _build(settings, "data")
    stop_at = settings["stop_at"]
    workers = settings["workers"]
    if workers is not None:
        original_setup = data.setup

        def setup() -> None:
            original_setup()
            _override_workers(data, workers)

        data.setup = setup
    callbacks = []
    if stop_at is not None:
        callbacks.append(_SignalAt(stop_at, signal.Signals[settings["stop_signal"]]))
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
        callbacks=callbacks,
        compile=bool(settings.get("compile", False)),
    ).fit(model, data)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
