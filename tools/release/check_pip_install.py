"""Install Helios from a checkout with pip alone (no uv), as the installation page says.

The path checked is the one a user without uv takes: a fresh virtual environment made by
``python -m venv``, torch installed first, then ``pip install ./packages/helios-core
./packages/helios-data`` from the checkout, then the resumable sampler imported and used in a
hand-written loop (``tools/release/smoke/helios-data.py``).

Torch is not downloaded again: the fresh environment borrows the third-party packages of the
running environment (torch, NumPy and what they need) through a ``.pth`` file pointing at a
folder of links to them, which stands in for "install torch first". Nothing of Helios is
borrowed: pip builds and installs ``helios-core`` and ``helios-data`` from the checkout, with
its own isolated build environment, and the check fails if they are imported from anywhere
else or if pip installed anything beyond them.

Run:
    uv run python tools/release/check_pip_install.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOKE = Path(__file__).parent / "smoke" / "helios-data.py"
PACKAGES = ("helios-core", "helios-data")


def borrowed(site_packages: Path, into: Path) -> int:
    """Link every third-party entry of ``site_packages`` into ``into``; no Helios, no ``.pth``."""
    into.mkdir()
    count = 0
    for entry in site_packages.iterdir():
        name = entry.name.lower()
        if name.startswith(("helios", "_helios", "__editable__", "_distutils_hack", "pip")):
            continue
        if entry.suffix == ".pth" or name == "__pycache__":
            continue
        (into / entry.name).symlink_to(entry)
        count += 1
    return count


def run(*command: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"},
    )
    if result.returncode != 0:
        sys.exit(
            f"failed ({result.returncode}): {' '.join(map(str, command))}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="helios-pip-") as workdir:
        work = Path(workdir)
        venv = work / "venv"
        run(sys.executable, "-m", "venv", venv, cwd=work)
        python = venv / "bin" / "python"
        site = Path(
            run(
                python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
            ).strip()
        )
        links = borrowed(Path(sysconfig.get_paths()["purelib"]), work / "borrowed")
        (site / "zz_borrowed_torch.pth").write_text(f"{work / 'borrowed'}\n")
        before = {
            item["name"].lower()
            for item in json.loads(run(python, "-m", "pip", "list", "--format=json", cwd=work))
        }
        if "torch" not in before or any(name.startswith("helios") for name in before):
            sys.exit(f"the fresh environment should see torch and no Helios: {sorted(before)}")

        run(python, "-m", "pip", "install", "--quiet",
            *(ROOT / "packages" / name for name in PACKAGES), cwd=work)  # fmt: skip

        after = {
            item["name"].lower(): item["version"]
            for item in json.loads(run(python, "-m", "pip", "list", "--format=json", cwd=work))
        }
        added = sorted(set(after) - before)
        if added != sorted(PACKAGES):
            sys.exit(f"pip should have installed exactly {list(PACKAGES)}, installed {added}")
        where = run(
            python, "-c",
            "import helios.core, helios.data; print(helios.core.__file__); "
            "print(helios.data.__file__)",
            cwd=work,
        ).split()  # fmt: skip
        outside = [path for path in where if not path.startswith(str(site))]
        if outside:
            sys.exit(f"helios imported from outside the pip-installed environment: {outside}")
        run(python, SMOKE, cwd=work)
    print(
        f"ok  pip install {' '.join(f'./packages/{name}' for name in PACKAGES)} "
        f"into a fresh venv (torch borrowed, {links} entries): sampler smoke test passed "
        f"({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
