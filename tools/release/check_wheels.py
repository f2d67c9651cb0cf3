"""Install every built wheel alone in a fresh virtual environment and import it.

This proves "install only what you need": each distribution gets only its declared
dependencies (its Helios siblings from the same build, the rest from the package index),
and its import package imports. Distributions that must stay light (everything but
helios-log, helios-export and the meta-package) are also checked to pull in none of
tensorboard, onnx or tqdm. A script ``tools/release/smoke/<import-name>.py`` (``helios-data.py``
for ``helios.data``), where one exists, then runs inside that environment (e.g. the resumable
sampler driving a raw loop).

Run (after ``uv build --all-packages --out-dir dist``):
    uv run python tools/release/check_wheels.py dist
"""

from __future__ import annotations

import argparse
import concurrent.futures
import email.parser
import functools
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HEAVY = ("tensorboard", "onnx", "onnxruntime", "onnxscript", "tqdm")
MAY_BE_HEAVY = {"helios-log", "helios-export", "helios"}
SMOKE = Path(__file__).parent / "smoke"


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


def distribution_name(wheel: Path) -> str:
    return str(metadata(wheel)["Name"])


def sibling_requirements(wheel: Path) -> list[str]:
    names = []
    for requirement in metadata(wheel).get_all("Requires-Dist") or []:
        match = re.match(r"\s*(helios(?:-[a-z]+)?)\s*==", requirement)
        if match:
            names.append(match.group(1))
    return names


def import_name(distribution: str) -> str:
    return "helios.trainer" if distribution == "helios" else distribution.replace("-", ".")


def closure(distribution: str, wheels: dict[str, Path]) -> list[Path]:
    """The wheel of ``distribution`` and of every Helios sibling it needs, transitively."""
    seen: list[str] = []
    pending = [distribution]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        if name not in wheels:
            sys.exit(f"{distribution} needs {name}, but no wheel of it was built")
        seen.append(name)
        pending.extend(sibling_requirements(wheels[name]))
    return [wheels[name] for name in seen]


def check(distribution: str, wheels: dict[str, Path], workdir: Path) -> str:
    """Install ``distribution`` alone into a fresh venv and run its probe and smoke test.

    Returns the lines to print; the commands' output is captured, and shown only on failure,
    so that checks running side by side do not interleave.
    """
    started = time.perf_counter()
    venv = workdir / distribution
    python = venv / "bin" / "python"
    output: list[str] = []
    run = functools.partial(_run, distribution, output)
    run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)])
    run(
        ["uv", "pip", "install", "--quiet", "--python", str(python)]
        + [str(w) for w in closure(distribution, wheels)]
    )
    module = import_name(distribution)
    forbid = [] if distribution in MAY_BE_HEAVY else list(HEAVY)
    probe = (
        "import importlib, importlib.util, sys\n"
        f"importlib.import_module({module!r})\n"
        f"present = [m for m in {forbid!r} if importlib.util.find_spec(m) is not None]\n"
        "assert not present, f'should not be installed: {present}'\n"
        f"loaded = [m for m in {list(HEAVY)!r} if m in sys.modules]\n"
        f"assert {distribution in MAY_BE_HEAVY!r} or not loaded, f'imported: {{loaded}}'\n"
    )
    run([str(python), "-c", probe], cwd=workdir)
    smoke = SMOKE / f"{module.replace('.', '-')}.py"
    if smoke.exists():
        run([str(python), str(smoke)], cwd=workdir)
    extra = f" + {smoke.name}" if smoke.exists() else ""
    elapsed = time.perf_counter() - started
    output.append(f"ok  {distribution}: imports {module}{extra} ({elapsed:.0f} s)")
    return "\n".join(output)


class CheckFailedError(Exception):
    """One distribution's check failed; the message holds its commands' output."""


def _run(distribution: str, output: list[str], command: list[str], cwd: Path | None = None) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)
    text = (completed.stdout + completed.stderr).strip()
    if completed.returncode != 0:
        raise CheckFailedError(
            f"FAILED {distribution}: {' '.join(command)} exited {completed.returncode}\n{text}"
        )
    if text:
        output.append(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path, help="folder holding the built wheels")
    args = parser.parse_args()
    wheels = {distribution_name(w): w for w in sorted(args.dist.glob("*.whl"))}
    if len(wheels) != 7:
        sys.exit(f"expected 7 wheels in {args.dist}, found {sorted(wheels)}")
    failed = False
    with (
        tempfile.TemporaryDirectory(prefix="helios-wheels-") as workdir,
        concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool,  # CI has two cores
    ):
        futures = [pool.submit(check, d, wheels, Path(workdir)) for d in sorted(wheels)]
        for future in futures:
            try:
                print(future.result(), flush=True)
            except CheckFailedError as error:
                print(error, flush=True)
                failed = True
    if failed:
        sys.exit("some wheels failed their check (see above)")


if __name__ == "__main__":
    main()
