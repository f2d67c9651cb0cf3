"""The ``helios`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the ``helios`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="helios", description="Helios training tools.")
    parser.parse_args(argv)
    parser.print_help(sys.stdout)
    return 0
