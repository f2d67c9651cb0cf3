"""``compile`` with ``strategy="fsdp"``: sharded first, then compiled in place; same weights.

Two processes (Gloo, CPU), the ``aot_eager`` backend (inductor's compile takes minutes on two
cores): the compiled FSDP run ends bitwise identical to the same FSDP run uncompiled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fsdp_job import run
from resume_checks import final_checkpoint

SETTINGS: dict[str, Any] = {
    "strategy": "fsdp",
    "devices": 2,
    "unit": "iteration",
    "total": 4,
    "checkpoint_every": 2,
    "batch_size": 4,
    "seed": 5,
    "log_every": 1,
}


@pytest.mark.slow
def test_a_compiled_fsdp_run_trains_as_the_uncompiled_one(tmp_path: Path) -> None:
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    run({"run_dir": str(eager), **SETTINGS})
    run({"run_dir": str(compiled), "compile": {"backend": "aot_eager"}, **SETTINGS})
    log = (compiled / "logs" / "rank-0.log").read_text()
    assert "sharded over mesh (2,)" in log
    assert "compiled 1 module(s) (FSDPSequential)" in log
    a = final_checkpoint(eager)["model"]["networks"]["net"]
    b = final_checkpoint(compiled)["model"]["networks"]["net"]
    assert a.keys() == b.keys()  # no wrapper in the keys
    for name in a:
        assert torch.equal(a[name], b[name]), name
