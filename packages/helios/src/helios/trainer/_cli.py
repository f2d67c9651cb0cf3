"""The ``helios`` command: inspect checkpoints, export to ONNX, check that a model resumes exactly.

    helios checkpoints RUN_DIR
    helios export CHECKPOINT --model module:Class [--out PATH]
    helios verify-resume --model module:Class --data module:Class [--steps N] [--workers K]

Bad input (a missing folder, a corrupt checkpoint, a ``module:Class`` that does not import)
gets one line on stderr and exit status 2; ``verify-resume`` exits 1 when the runs diverge, and
``export`` exits 1 (with one line) when the export or its onnxruntime check fails.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helios.core import HeliosError

__all__ = ["load_class", "main"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class CommandError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


def load_class(spec: str) -> type[Any]:
    """Import ``module:Class`` (``module.Class`` is accepted too), from the current folder too.

    Raises:
        CommandError: the module or the class cannot be found.
    """
    module_name, sep, class_name = spec.partition(":")
    if not sep:
        module_name, _, class_name = spec.rpartition(".")
    if not module_name or not class_name:
        raise CommandError(f"{spec!r} is not of the form module:Class")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # an import runs user code: any error is the user's to see
        raise CommandError(
            f"cannot import module {module_name!r} for {spec!r}: {type(error).__name__}: {error}"
        ) from error
    found = getattr(module, class_name, None)
    if not isinstance(found, type):
        raise CommandError(f"module {module_name!r} has no class {class_name!r}")
    return found


def _store(folder: Path) -> Any:
    from helios.trainer._wiring import open_checkpoint_folder

    return open_checkpoint_folder(folder)


def _format_metrics(metrics: Any) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(dict(metrics).items())) or "-"


def checkpoints(run_dir: Path) -> int:
    """Print every checkpoint of a run, whether it verifies, and the one a resume would pick."""
    if not run_dir.is_dir():
        raise CommandError(f"run folder {str(run_dir)!r} does not exist")
    folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    store = _store(folder)
    infos = store.list()
    if not infos:
        print(f"no checkpoints in {folder}")
        return 0
    print(f"checkpoints in {folder}:")
    print(f"  {'step':>8} {'epoch':>6} {'size':>10}  {'status':<8} {'file':<24} metrics")
    for info in infos:
        try:
            store.verify(info)
            status = "ok"
        except HeliosError as error:
            status = f"CORRUPT ({error})"
        print(
            f"  {info.step:>8} {info.epoch:>6} {info.size:>10,}  {status.split(' (')[0]:<8} "
            f"{info.path.name:<24} {_format_metrics(info.metrics)}"
        )
        if status != "ok":
            print(f"           {status}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latest = store.latest()
    print(f"resume would pick: {latest.path.name if latest else 'none (no good checkpoint)'}")
    return 0


def export(checkpoint: Path, model_spec: str, out: Path | None) -> int:
    """Restore a Model from a checkpoint and export it through its export hook."""
    from helios.trainer import Trainer

    if not checkpoint.is_file():
        raise CommandError(f"checkpoint {str(checkpoint)!r} does not exist")
    model_class = load_class(model_spec)
    run_dir = (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )
    trainer = Trainer(run_dir, total=1, progress=False)
    trainer.checkpoint_store = _store(checkpoint.parent)
    report = trainer.export(model_class(), checkpoint, out)
    print(report)
    return 0


def verify_resume(
    model_spec: str, data_spec: str, steps: int, workers: int | None, seed: int
) -> int:
    """Train twice straight and once stopped and resumed; report whether all three agree."""
    from helios.trainer._verify import verify

    load_class(model_spec)
    load_class(data_spec)
    return verify(model_spec, data_spec, steps=steps, workers=workers, seed=seed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helios", description="Helios training tools: checkpoints, ONNX export, resume checks."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser(
        "checkpoints",
        help="list a run's checkpoints and whether each verifies",
        description="List every checkpoint of a run with step, epoch, metrics and size, "
        "verify each (size and SHA-256), and say which one a resume would pick.",
    )
    listing.add_argument("run_dir", type=Path, help="the run folder (or its checkpoints folder)")

    exporting = commands.add_parser(
        "export",
        help="export a checkpoint's network to ONNX",
        description="Restore a Model from a checkpoint and export the network its "
        "export_target() names to ONNX, checked in onnxruntime; prints the parity report.",
    )
    exporting.add_argument("checkpoint", type=Path, help="the checkpoint file")
    exporting.add_argument("--model", required=True, help="the Model class, as module:Class")
    exporting.add_argument("--out", type=Path, help="the ONNX file (default: RUN_DIR/onnx/...)")

    checking = commands.add_parser(
        "verify-resume",
        help="check that a Model and DataModule resume bitwise identically",
        description="Train the Model on the DataModule for N steps straight (twice), and again "
        "stopped at a random step (not a checkpoint step, not an epoch boundary) and resumed "
        "in a fresh process. Compares every parameter, optimizer and scheduler state and the "
        "loss series. Exit status 0 when identical, 1 when the runs diverge.",
    )
    checking.add_argument("--model", required=True, help="the Model class, as module:Class")
    checking.add_argument("--data", required=True, help="the DataModule class, as module:Class")
    checking.add_argument("--steps", type=int, default=40, help="optimizer steps (default 40)")
    checking.add_argument(
        "--workers", type=int, default=None, help="loader workers for training (default: as set)"
    )
    checking.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``helios`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    from helios.trainer._wiring import CheckpointWarning, ExportError

    # A damaged checkpoint is reported by the command itself (a status or the error line).
    warnings.filterwarnings("ignore", category=CheckpointWarning)
    try:
        if args.command == "checkpoints":
            return checkpoints(args.run_dir)
        if args.command == "export":
            return export(args.checkpoint, args.model, args.out)
        if args.steps < 4:
            raise CommandError(f"--steps must be at least 4, got {args.steps}")
        if args.workers is not None and args.workers < 0:
            raise CommandError(f"--workers must be >= 0, got {args.workers}")
        return verify_resume(args.model, args.data, args.steps, args.workers, args.seed)
    except (CommandError, HeliosError, OSError) as error:
        print(f"helios {args.command}: error: {_first_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExportError as error:  # the export itself failed: not the user's input
        print(f"helios {args.command}: export failed: {_first_line(error)}", file=sys.stderr)
        return EXIT_FAILED


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
