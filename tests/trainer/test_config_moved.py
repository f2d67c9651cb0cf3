"""A project folder moved with its config (and its run folder) resumes: class files stay relative.

A small project -- ``config.toml``, ``project.py`` (``class = "project.py:..."``) and its run
folder ``runs/`` -- trains 3 steps in place, is moved elsewhere, and resumes to 6 steps from the
moved run folder (``helios fit RUN_DIR``, in this process, from another current folder). A
straight 6-step run of the same config is the reference: the final states are ``torch.equal``
and ``metrics.jsonl`` agrees record by record.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
from config_models import config
from resume_checks import comparable_records, final_checkpoint
from state_checks import assert_nested_equal

from helios.core import ConfigurationError
from helios.trainer import from_config
from helios.trainer._cli import main as helios_command
from helios.trainer._config import config_sha256, resolve, to_toml
from helios.trainer._run_config import saved_config_dir, write_config

PROJECT_CODE = '''\
from config_models import ConfigData, ConfigModel


class ProjectModel(ConfigModel):
    """The config test model, from a file of the project."""


class ProjectData(ConfigData):
    """The toy data, from a file of the project."""
'''


def write_project(folder: Path, total: int) -> Path:
    """``folder/config.toml`` naming classes of ``folder/code/project.py`` by a relative path."""
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "project.py").write_text(PROJECT_CODE)
    project = config("runs/stopped", total=total)
    project["model"]["class"] = "code/project.py:ProjectModel"
    project["data"]["class"] = "./code/project.py:ProjectData"
    project["trainer"]["valid_every"] = 3  # the stopped run validates at 3; so does the straight
    file = folder / "config.toml"
    file.write_text(to_toml(project))
    return file


def test_a_moved_project_resumes_from_its_moved_run_folder_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after, elsewhere = tmp_path / "before", tmp_path / "moved" / "project", tmp_path / "cwd"
    file = write_project(before, total=3)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the config's folder, not the current one, finds project.py
    model, data, trainer = from_config(file, ["trainer.run_dir=" + str(before / "runs/stopped")])
    assert trainer.fit(model, data).complete

    saved = (before / "runs/stopped/config.toml").read_text()
    assert tomllib.loads(saved)["model"]["class"] == "code/project.py:ProjectModel"  # as written
    assert tomllib.loads(saved)["data"]["class"] == "./code/project.py:ProjectData"
    mentions = [line.split(" =")[0] for line in saved.splitlines() if str(before) in line]
    assert mentions == ["# config_dir.absolute", "run_dir"]  # neither is part of the hash
    assert '# config_dir.relative = "../.."' in saved.splitlines()

    shutil.move(before, after)
    # the moved config hashes as the run's own: its class files are the same relative paths
    digest = final_checkpoint(after / "runs/stopped")["trainer"]["config_sha256"]
    moved = tomllib.loads((after / "config.toml").read_text())
    assert config_sha256(resolve(moved, base_dir=after)) == digest

    run_dir = after / "runs" / "stopped"
    assert helios_command(["fit", str(run_dir), "--set", "trainer.total=6"]) == 0
    assert "trained to step 6 (resumed from step-00000003.pt)" in capsys.readouterr().out
    (change,) = [json.loads(line) for line in (run_dir / "config-changes.jsonl").open()]
    assert change["changes"] == {"trainer.total": {"old": 3, "new": 6}}

    model, data, trainer = from_config(
        after / "config.toml",
        ["trainer.run_dir=" + str(after / "runs/straight"), "trainer.total=6"],
    )
    assert trainer.fit(model, data).complete
    a, b = final_checkpoint(run_dir), final_checkpoint(after / "runs/straight")
    for part in ("model", "training_state", "data", "rng", "callbacks"):
        assert_nested_equal(a[part], b[part], part)
    assert comparable_records(run_dir) == comparable_records(after / "runs/straight")
    assert len(comparable_records(run_dir)) >= 6


def test_a_relative_class_file_that_is_missing_is_named_with_the_folder_it_was_sought_in(
    tmp_path: Path,
) -> None:
    file = write_project(tmp_path / "project", total=3)
    (tmp_path / "project" / "code" / "project.py").unlink()
    with pytest.raises(ConfigurationError) as missing:
        from_config(file)
    assert str(tmp_path / "project" / "code" / "project.py") in str(missing.value)


def test_the_run_folder_records_the_config_folder_relative_first_absolute_when_moved_alone(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    run_dir = project / "runs" / "a"
    written = tomllib.loads(write_project(project, total=3).read_text())
    write_config(run_dir, written, project)
    assert tomllib.loads((run_dir / "config.toml").read_text()) == written
    assert saved_config_dir(run_dir) == project.resolve()

    shutil.move(project, tmp_path / "moved")  # config, code and runs together: found relatively
    assert saved_config_dir(tmp_path / "moved" / "runs" / "a") == (tmp_path / "moved").resolve()

    # the project back in place, the run folder moved alone: where the config was
    shutil.move(tmp_path / "moved" / "runs", tmp_path / "scratch" / "runs")
    shutil.move(tmp_path / "moved", project)
    assert saved_config_dir(tmp_path / "scratch" / "runs" / "a") == project.resolve()

    write_config(tmp_path / "plain", config("plain"))  # a trainer built without a config file
    assert saved_config_dir(tmp_path / "plain") is None
