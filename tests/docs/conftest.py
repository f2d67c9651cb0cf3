"""Shared helpers of the documentation tests: ``docs_blocks`` is importable from here."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
