"""Shared helpers of the helios-data tests: ``helios_data_testing`` is importable from here.

The helper module is a plain file, not a test module, so a child process (the "fresh process
resumes" tests) can import the same dataset class as the test that saved the state.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
