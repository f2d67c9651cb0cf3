"""The ``helios`` command: inspect checkpoints, export to ONNX, check that a model resumes exactly.

    helios checkpoints RUN_DIR
    helios checkpoints extract CHECKPOINT -o FILE
    helios export CHECKPOINT --model module:Class [--out PATH]
    helios verify-resume --model module:Class --data module:Class [--steps N] [--workers K]

Bad input (a missing folder, a corrupt checkpoint, a ``module:Class`` that does not import)
gets one line on stderr and exit status 2; ``checkpoints`` exits 1 when the newest checkpoint
is damaged; ``verify-resume`` exits 1 when the runs diverge, and
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
from helios.trainer._cli_checkpoints import CommandError, checkpoints, extract

__all__ = ["load_class", "main"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
_EXTRACT = "checkpoints extract"


def _current_folder_last() -> None:
    """Let the current folder provide modules, but never before the installed ones.

    ``python -m helios.trainer`` puts the current folder first on ``sys.path``: a file there
    named like an installed module (an ``onnxruntime.py``) would run instead of it. The folder
    goes last, where it still finds the user's own ``module:Class``.
    """
    here = os.path.realpath(os.getcwd())
    sys.path[:] = [entry for entry in sys.path if entry != "" and os.path.realpath(entry) != here]
    sys.path.append(here)


def load_class(spec: str) -> type[Any]:
    """Import ``module:Class`` (``module.Class`` is accepted too), from the current folder too.

    The current folder is searched after the installed packages, never before them.

    Raises:
        CommandError: the module or the class cannot be found.
    """
    module_name, sep, class_name = spec.partition(":")
    if not sep:
        module_name, _, class_name = spec.rpartition(".")
    if not module_name or not class_name:
        raise CommandError(f"{spec!r} is not of the form module:Class")
    _current_folder_last()
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


def _model_class(spec: str) -> type[Any]:
    """The class ``--model`` names, which must be a :class:`helios.core.Model`."""
    from helios.core import ConfigurationError, Model

    found = load_class(spec)
    if not issubclass(found, Model):
        raise ConfigurationError(
            f"--model {spec!r} names {found.__module__}.{found.__qualname__}, which is not a "
            "helios.core.Model; expected a subclass of Model"
        )
    return found


def _store(folder: Path) -> Any:
    from helios.trainer._wiring import open_checkpoint_folder

    return open_checkpoint_folder(folder)


def export(checkpoint: Path, model_spec: str, out: Path | None) -> int:
    """Restore a Model from a checkpoint and export it through its export hook."""
    from helios.trainer import Trainer

    if not checkpoint.is_file():
        raise CommandError(f"checkpoint {str(checkpoint)!r} does not exist")
    model_class = _model_class(model_spec)
    run_dir = (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )
    # a factory: the trainer closes the store it builds from it
    trainer = Trainer(
        run_dir, total=1, progress=False, checkpoint_store=lambda _: _store(checkpoint.parent)
    )
    report = trainer.export(model_class(), checkpoint, out)
    print(report)
    return 0


def verify_resume(
    model_spec: str, data_spec: str, steps: int, workers: int | None, seed: int
) -> int:
    """Train twice straight and once stopped and resumed; report whether all three agree."""
    from helios.trainer._verify import verify

    _model_class(model_spec)
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
        description="List every entry of a run that looks like a checkpoint with step, epoch, "
        "size, metrics and a verdict: ok, CORRUPT (with the reason), REFUSED (intact, but it "
        "holds objects weights-only loading refuses), not a regular file; and leftover "
        "temporary files. Each checkpoint is verified (size, SHA-256) and loaded weights-only. "
        "Says which one a resume would pick; exit status 1 when the newest is not ok.",
    )
    listing.add_argument(
        "run_dir", type=Path, help="the run folder (or its checkpoints folder, or one file)"
    )

    extracting = commands.add_parser(
        _EXTRACT,
        help="write a checkpoint's network weights as a plain file torch.load opens",
        description="Verify a checkpoint and write its networks' weights alone to FILE: "
        "{'format', 'networks': {name: state_dict}, 'source': {...}}, which "
        "torch.load(FILE, weights_only=True) opens without Helios and Model.load_weights(FILE) "
        "loads. 'source' records the checkpoint's name, step, epoch and SHA-256.",
    )
    extracting.add_argument("checkpoint", type=Path, help="the checkpoint file")
    extracting.add_argument("-o", "--out", type=Path, required=True, help="the file to write")

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
    _current_folder_last()
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:2] == ["checkpoints", "extract"]:  # a sub-command of "checkpoints RUN_DIR"
        given = [_EXTRACT, *given[2:]]
    args = _parser().parse_args(given)
    from helios.trainer._wiring import CheckpointWarning, ExportError

    # A damaged checkpoint is reported by the command itself (a status or the error line).
    warnings.filterwarnings("ignore", category=CheckpointWarning)
    try:
        if args.command == "checkpoints":
            return checkpoints(args.run_dir)
        if args.command == _EXTRACT:
            return extract(args.checkpoint, args.out)
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
