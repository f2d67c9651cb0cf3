"""The helios-data wheel alone: built, installed in a fresh venv with torch, driving a raw loop.

Also runs the docstring examples of the package, so the README-style snippets stay true.
"""

from __future__ import annotations

import doctest
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import helios.data
from helios.data import _datamodule, _loader, _permutation, _position, _sampler

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "tools" / "release" / "smoke" / "helios-data.py"


@pytest.mark.parametrize("module", [_datamodule, _loader, _permutation, _position, _sampler])
def test_docstring_examples_run(module: object) -> None:
    names = {name: getattr(helios.data, name) for name in helios.data.__all__}
    result = doctest.testmod(module, extraglobs=names, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build and install wheels")
def test_the_wheel_installs_alone_and_its_sampler_drives_a_raw_loop(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    for package in ("helios-core", "helios-data"):
        subprocess.run(
            ["uv", "build", "--quiet", "--wheel", "--package", package, "--out-dir", str(dist)],
            cwd=ROOT,
            check=True,
            timeout=240,
        )
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    subprocess.run(
        ["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=120
    )
    install = ["uv", "pip", "install", "--quiet", "--python", str(python)]
    wheels = [str(w) for w in sorted(dist.glob("*.whl"))]
    # From uv's cache when it has torch and NumPy (CI after `uv sync`), else from the index.
    if subprocess.run([*install, "--offline", *wheels], check=False, timeout=600).returncode:
        subprocess.run([*install, *wheels], check=True, timeout=600)
    listed = subprocess.run(
        ["uv", "pip", "list", "--python", str(python)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    installed = {line.split()[0] for line in listed.splitlines()[2:]}
    assert {"helios-core", "helios-data", "torch", "numpy"} <= installed
    assert not installed & {"helios-dist", "helios-ckpt", "helios-log", "tensorboard", "onnx"}
    result = subprocess.run(
        [str(python), str(SMOKE)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "gives the same batches" in result.stdout
