"""``helios fit``: a run stopped by SIGTERM resumes from its folder exactly.

``helios fit CONFIG`` runs in a fresh process, stopped by a real SIGTERM after step 5 (exit
status 75); ``helios fit RUN_DIR`` then resumes with the config saved in the run folder (in this
process, through the command's ``main``: one subprocess is enough). A straight run of the same
config is the reference: the final states are ``torch.equal`` and ``metrics.jsonl`` agrees record
by record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from config_models import SIGTERM_AT, config
from resume_checks import final_checkpoint
from state_checks import assert_nested_equal

from helios.trainer import RESUMABLE_EXIT_CODE, from_config
from helios.trainer._cli import main as helios_command
from helios.trainer._config import to_toml

SUPPORT = Path(__file__).parents[1] / "support"


def helios_fit(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``helios fit ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "helios.trainer", "fit", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=env,
        cwd=cwd,
    )


def records(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_helios_fit_run_dir_resumes_exactly_after_a_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    file = tmp_path / "run.toml"
    file.write_text(to_toml(config(str(stopped), total=10)))
    path = os.pathsep.join(filter(None, [str(SUPPORT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", SIGTERM_AT: "5"}

    first = helios_fit(str(file), env=env, cwd=tmp_path)
    assert first.returncode == RESUMABLE_EXIT_CODE, first.stdout + first.stderr
    assert final_checkpoint(stopped)["training_state"]["step"] == 5

    file.unlink()  # the run folder's own config.toml is what resumes
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(SUPPORT))
    assert helios_command(["fit", str(stopped)]) == 0
    assert "trained to step 10 (resumed from step-00000005.pt)" in capsys.readouterr().out

    model, data, trainer = from_config(config(str(straight), total=10))
    assert trainer.fit(model, data).complete

    a, b = final_checkpoint(stopped), final_checkpoint(straight)
    for part in ("model", "training_state", "data", "rng", "callbacks", "trainer"):
        assert_nested_equal(a[part], b[part], part)  # trainer: the same config hash too
    assert records(stopped) == records(straight)
    assert len(records(straight)) >= 10
    assert not (stopped / "config-changes.jsonl").exists()
