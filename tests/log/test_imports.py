"""What ``import helios.log`` pulls in: helios-core's seams, never a sibling package."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_pulls_in_no_sibling_package_and_no_tensorboard_until_used() -> None:
    code = (
        "import json, sys, helios.log; "
        "print(json.dumps([m for m in sys.modules if m.startswith(('helios', 'tensorboard'))]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(result.stdout)
    assert {name.split(".")[1] for name in loaded if name.startswith("helios.")} <= {"core", "log"}
    assert not any(name.startswith("tensorboard") for name in loaded)
