"""Run an example file of docs/examples as a user does: ``python docs/examples/NAME ARGS``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from docs_blocks import DOCS

EXAMPLES = DOCS / "examples"


def run_example(name: str, *args: str, expect: int = 0, cwd: Path | None = None) -> str:
    """The example's stdout and stderr; fails unless it exits with ``expect``."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=cwd,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == expect, f"exit {completed.returncode}:\n{output}"
    return output
