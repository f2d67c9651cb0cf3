"""The ``helios`` command: train from a config, inspect checkpoints, export, check resume.

    helios fit CONFIG.toml|RUN_DIR [--set KEY=VALUE] [--allow-change KEY] [--print-config]
               [--dry-run [N]]                       (see :mod:`helios.trainer._cli_fit`)
    helios checkpoints RUN_DIR
    helios checkpoints extract CHECKPOINT -o FILE
    helios checkpoints consolidate RUN_DIR/checkpoints/STEP -o FILE
    helios export CHECKPOINT --model SPEC [--model-args JSON] [--out PATH]
    helios verify-resume --model SPEC --data SPEC [--model-args JSON] [--data-args JSON]
                         [--steps N] [--workers K] [--seed S] [--stops KIND[,KIND...]]

SPEC is ``module:Name`` or ``path/to/file.py:Name``: a class, or a function returning the object
(see :mod:`helios.trainer._objects`).

Bad input (a missing folder, a corrupt checkpoint, a ``module:Class`` that does not import)
gets one line on stderr and exit status 2; ``checkpoints`` exits 1 when the newest checkpoint
is damaged; ``verify-resume`` exits 1 when the runs diverge, and
``export`` exits 1 (with one line) when the export or its onnxruntime check fails.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helios.core import HeliosError
from helios.trainer import _cli_fit
from helios.trainer._cli_checkpoints import CommandError, checkpoints, extract
from helios.trainer._cli_checkpoints import consolidate as consolidate_checkpoint
from helios.trainer._objects import build, current_folder_last, load_object
from helios.trainer._verify import STOP_KEYS

__all__ = ["load_class", "main"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
_EXTRACT = "checkpoints extract"
_CONSOLIDATE = "checkpoints consolidate"


def load_class(spec: str) -> type[Any]:
    """Import the class ``module:Class`` or ``path/to/file.py:Class`` names.

    The current folder is searched after the installed packages, never before them.

    Raises:
        CommandError: the module, file or class cannot be found.
    """
    found = load_object(spec)
    if not isinstance(found, type):
        raise CommandError(f"{spec!r} names a function; expected a class")
    return found


def _model(spec: str, args: str | None) -> Any:
    from helios.core import Model

    return build(spec, args, "--model", Model, "helios.core.Model")


def _data(spec: str, args: str | None) -> Any:
    from helios.data import DataModule

    return build(spec, args, "--data", DataModule, "helios.data.DataModule")


def _store(folder: Path) -> Any:
    from helios.trainer._wiring import open_checkpoint_folder

    return open_checkpoint_folder(folder)


def export(checkpoint: Path, model_spec: str, model_args: str | None, out: Path | None) -> int:
    """Restore a Model from a checkpoint and export it through its export hook."""
    from helios.trainer import Trainer

    sharded = checkpoint.is_dir() and (checkpoint / "manifest.json").is_file()
    if not (checkpoint.is_file() or sharded):
        raise CommandError(
            f"checkpoint {str(checkpoint)!r} does not exist (expected a checkpoint file or a "
            "sharded checkpoint's folder)"
        )
    model = _model(model_spec, model_args)
    run_dir = (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )
    # a factory: the trainer closes the store it builds from it
    trainer = Trainer(
        run_dir, total=1, progress=False, checkpoint_store=lambda _: _store(checkpoint.parent)
    )
    report = trainer.export(model, checkpoint, out)
    print(report)
    return 0


def verify_resume(args: argparse.Namespace) -> int:
    """Train twice straight and once stopped and resumed; report whether all three agree."""
    from helios.trainer._verify import verify

    _model(args.model, args.model_args)  # one line and exit 2 here, not in a child process
    _data(args.data, args.data_args)
    return verify(
        args.model,
        args.data,
        steps=args.steps,
        workers=args.workers,
        seed=args.seed,
        model_args=args.model_args,
        data_args=args.data_args,
        stops=args.stops,
        compile_networks=args.compile,
    )


def _stop_keys(text: str) -> tuple[str, ...]:
    """``--stops``: a comma-separated list of :data:`STOP_KEYS`."""
    keys = tuple(key.strip() for key in text.split(",") if key.strip())
    unknown = [key for key in keys if key not in STOP_KEYS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected one or more of {', '.join(STOP_KEYS)}, separated by commas"
        )
    return keys


def _object_options(parser: argparse.ArgumentParser, flag: str, what: str) -> None:
    parser.add_argument(
        flag,
        required=True,
        metavar="SPEC",
        help=f"{what}: a class or a function returning one, as module:Name or path/to/file.py:Name",
    )
    parser.add_argument(
        f"{flag}-args",
        metavar="JSON",
        help=f"keyword arguments for {flag} as a JSON object, e.g. '{{\"width\": 64}}'",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helios",
        description="Helios training tools: runs from a config, checkpoints, ONNX export, "
        "resume checks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _cli_fit.add_parser(commands)

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

    consolidating = commands.add_parser(
        _CONSOLIDATE,
        help="write a sharded checkpoint as one ordinary checkpoint file",
        description="Verify a sharded checkpoint (a folder RUN_DIR/checkpoints/step-NNNNNNNN "
        "written by every rank) and write its whole state, every sharded tensor gathered, as "
        "one ordinary Helios checkpoint FILE with the same step, epoch and metrics; it loads "
        "on one process (helios export, Trainer.test) and with helios.ckpt.",
    )
    consolidating.add_argument("folder", type=Path, help="the sharded checkpoint folder")
    consolidating.add_argument("-o", "--out", type=Path, required=True, help="the file to write")

    exporting = commands.add_parser(
        "export",
        help="export a checkpoint's network to ONNX",
        description="Restore a Model from a checkpoint and export the network its "
        "export_target() names to ONNX, checked in onnxruntime; prints the parity report.",
    )
    exporting.add_argument(
        "checkpoint", type=Path, help="the checkpoint file (or a sharded checkpoint's folder)"
    )
    _object_options(exporting, "--model", "the Model")
    exporting.add_argument("--out", type=Path, help="the ONNX file (default: RUN_DIR/onnx/...)")

    checking = commands.add_parser(
        "verify-resume",
        help="check that a Model and DataModule resume bitwise identically",
        description="Train the Model on the DataModule for N steps straight, and again once "
        "for each way a real job stops (SIGTERM mid-epoch, SIGKILL between checkpoints, "
        "SIGTERM at an epoch's last batch, SIGTERM at the last step), each resumed in a fresh "
        "process. Compares the whole metric series and the final checkpoint (model, "
        "optimizers, schedulers, training state, RNG states) exactly. Exit status 0 when "
        "identical, 1 when the runs diverge.",
    )
    _object_options(checking, "--model", "the Model")
    _object_options(checking, "--data", "the DataModule")
    checking.add_argument("--steps", type=int, default=40, help="optimizer steps (default 40)")
    checking.add_argument(
        "--workers", type=int, default=None, help="loader workers for training (default: as set)"
    )
    checking.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    checking.add_argument(
        "--stops",
        type=_stop_keys,
        default=STOP_KEYS,
        metavar="KIND[,KIND...]",
        help=f"the stops to try, of {', '.join(STOP_KEYS)} (default: all)",
    )
    checking.add_argument(
        "--compile",
        action="store_true",
        help="train every run with Trainer(compile=True); each process compiles, so it is slow",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``helios`` command; returns the exit status."""
    current_folder_last()
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:2] == ["checkpoints", "extract"]:  # a sub-command of "checkpoints RUN_DIR"
        given = [_EXTRACT, *given[2:]]
    if given[:2] == ["checkpoints", "consolidate"]:
        given = [_CONSOLIDATE, *given[2:]]
    args = _parser().parse_args(given)
    from helios.trainer._wiring import CheckpointWarning, ExportError

    # A damaged checkpoint is reported by the command itself (a status or the error line).
    warnings.filterwarnings("ignore", category=CheckpointWarning)
    if args.command == "fit":
        return _cli_fit.fit(args)
    try:
        if args.command == "checkpoints":
            return checkpoints(args.run_dir)
        if args.command == _EXTRACT:
            return extract(args.checkpoint, args.out)
        if args.command == _CONSOLIDATE:
            return consolidate_checkpoint(args.folder, args.out)
        if args.command == "export":
            return export(args.checkpoint, args.model, args.model_args, args.out)
        if args.steps < 4:
            raise CommandError(f"--steps must be at least 4, got {args.steps}")
        if args.workers is not None and args.workers < 0:
            raise CommandError(f"--workers must be >= 0, got {args.workers}")
        return verify_resume(args)
    except (CommandError, HeliosError, OSError) as error:
        print(f"helios {args.command}: error: {_first_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExportError as error:  # the export itself failed: not the user's input
        print(f"helios {args.command}: export failed: {_first_line(error)}", file=sys.stderr)
        return EXIT_FAILED


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
