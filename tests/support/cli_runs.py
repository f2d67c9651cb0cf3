"""The ``helios`` command run as a subprocess, as a user runs it; tests/support importable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from resume_checks import SUPPORT

HELIOS = [sys.executable, "-m", "helios.trainer"]


def helios(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(SUPPORT)}
    return subprocess.run(
        [*HELIOS, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environment,
        cwd=cwd,
    )
