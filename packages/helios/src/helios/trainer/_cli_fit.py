"""``helios fit``: train what a config file describes, or resume a run from its folder.

    helios fit CONFIG.toml [--set KEY=VALUE ...] [--print-config] [--dry-run [N]]
    helios fit RUN_DIR [--set KEY=VALUE ...] [--allow-change KEY ...]

With a run folder the config saved there (``RUN_DIR/config.toml``) is used, so the run resumes
exactly as it was started. Errors in the config are printed whole (a refused resume lists every
difference) with exit status 2; a stop signal leaves with status 75, as ``Trainer.fit`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from helios.core import HeliosError

__all__ = ["add_parser", "fit"]

EXIT_BAD_INPUT = 2
DRY_RUN_STEPS = 2


def add_parser(commands: Any) -> None:
    """Add the ``fit`` sub-command to ``commands`` (argparse sub-parsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "fit",
        help="train the model, data and trainer a TOML config describes (or resume a run)",
        description="Build the Model, the DataModule and the Trainer from a TOML config "
        "(tables [model], [data], [trainer]) and train; run it again, or give the run folder "
        "instead of the config, and it resumes. A resume whose config differs from the one "
        "saved in the run folder is refused with the differences, except for keys safe to "
        "change (trainer.total, the logging and checkpoint cadence, ...) and --allow-change.",
    )
    parser.add_argument("config", type=Path, help="a TOML config file, or a run folder")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a key of the config, e.g. --set model.optimizer.lr=1e-3 (a TOML value, "
        "else a string); repeatable",
    )
    parser.add_argument(
        "--allow-change",
        dest="allow_change",
        action="append",
        default=[],
        metavar="KEY",
        help="let a resumed run change this key (or table) of its saved config; recorded in "
        "RUN_DIR/config-changes.jsonl with the step it took effect at; repeatable",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config, every default filled in, and exit",
    )
    parser.add_argument(
        "--dry-run",
        nargs="?",
        type=int,
        const=DRY_RUN_STEPS,
        default=None,
        metavar="N",
        help=f"train N steps (default {DRY_RUN_STEPS}), validate and test in a temporary "
        "folder that is then deleted: nothing is written to the run folder",
    )


def _source(target: Path) -> tuple[dict[str, Any], Path]:
    """The config ``target`` names (a file, or a run folder's saved one) and its folder."""
    from helios.trainer._config import read_config
    from helios.trainer._run_config import CONFIG_FILE

    if target.is_dir():
        saved = target / CONFIG_FILE
        if not saved.is_file():
            raise HeliosError(
                f"{str(target)!r} is a folder without {CONFIG_FILE}: give a config file, or the "
                "folder of a run started from one"
            )
        config = read_config(saved)
        config.setdefault("trainer", {})["run_dir"] = str(target)
        return config, target.resolve()
    return read_config(target), target.resolve().parent


def fit(args: argparse.Namespace) -> int:
    """Run ``helios fit``; returns the exit status."""
    from helios.trainer._config import from_config, resolve, to_toml

    overrides = list(args.overrides)
    if args.dry_run is not None:
        overrides.append(f"trainer.dry_run={args.dry_run}")
    try:
        config, base_dir = _source(args.config)
        if args.print_config:
            print(to_toml(resolve(config, overrides, base_dir=base_dir)), end="")
            return 0
        model, data, trainer = from_config(
            config, overrides, allow_change=args.allow_change, base_dir=base_dir
        )
        result = trainer.fit(model, data)
    except HeliosError as error:
        print(f"helios fit: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.dry_run is not None:
        print(f"dry run: {result.state.step} steps trained; nothing written to {trainer.run_dir}")
    elif result.steps_trained == 0 and result.complete:
        print(f"the run in {trainer.run_dir} is already complete")
    else:
        resumed = f" (resumed from {result.resumed_from.name})" if result.resumed_from else ""
        print(f"trained to step {result.state.step}{resumed}; run folder {trainer.run_dir}")
    return 0
