"""Every Python code block of docs/getting_started.rst runs, in order, in a fresh folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from docs_blocks import DOCS, code_blocks

from helios.ckpt import DirectoryCheckpointStore

PAGE = DOCS / "getting_started.rst"
RUNNER = Path(__file__).with_name("run_blocks.py")


def test_the_page_has_the_steps_of_the_tutorial() -> None:
    sources = [block.source for block in code_blocks(PAGE, "python")]
    joined = "\n".join(sources)
    assert len(sources) >= 7
    for step in (
        "class Digits(DataModule)",
        "class Classifier(Model)",
        ".fit(",
        ".test(",
        ".export(",
    ):
        assert step in joined, step


@pytest.mark.slow
def test_every_python_block_runs_in_order(tmp_path: Path) -> None:
    blocks = [
        {"name": str(PAGE), "line": block.line, "source": block.source}
        for block in code_blocks(PAGE, "python")
    ]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(RUNNER), str(tmp_path / "blocks.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert output.count("--- running") == len(blocks)

    # What the page says the run leaves behind.
    run = tmp_path / "runs" / "digits"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-00000021.pt", "step-00000042.pt", "step-00000063.pt"]
    for path in ("logs/rank-0.log", "metrics.jsonl", "metrics.hparams.json"):
        assert (run / path).is_file(), path
    assert (run / "onnx" / "Classifier.onnx").stat().st_size > 0
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    with DirectoryCheckpointStore(run / "checkpoints", keep_last=None) as store:
        last = store.load()
    assert last["training_state"]["epoch"] == 3
    assert torch.is_tensor(last["model"]["networks"]["net"]["0.weight"])
