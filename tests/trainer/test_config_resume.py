"""The config guards resume: saved in the run folder, hashed into checkpoints, diffs refused.

One short run from a config (6 steps, in-process) is trained once for the module; each test
resumes a copy of its folder.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from config_models import config
from resume_checks import final_checkpoint

from helios.ckpt import DirectoryCheckpointStore
from helios.core import ConfigurationError
from helios.trainer import from_config
from helios.trainer._cli import main as helios_command
from helios.trainer._config import config_sha256, resolve, without_run_dir


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("started") / "run"
    model, data, trainer = from_config(config(str(run_dir), total=6))
    assert trainer.fit(model, data).complete
    return run_dir


def copy_of(started: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(started, run_dir)
    return run_dir


def resume(run_dir: Path, overrides: list[str], allow: tuple[str, ...] = ()) -> Any:
    model, data, trainer = from_config(config(str(run_dir)), overrides, allow_change=allow)
    result = trainer.fit(model, data)
    return model, result


def test_the_resolved_config_is_saved_and_its_hash_is_in_every_checkpoint(started: Path) -> None:
    resolved = resolve(config(str(started), total=6))
    saved = tomllib.loads((started / "config.toml").read_text())
    assert saved == resolved
    digest = config_sha256(resolved)
    assert digest in (started / "config.toml").read_text().splitlines()[0]
    checkpoints = sorted((started / "checkpoints").glob("step-*.pt"))
    assert [p.name for p in checkpoints] == ["step-00000003.pt", "step-00000006.pt"]
    store = DirectoryCheckpointStore(started / "checkpoints")
    try:
        for path in checkpoints:
            assert store.load(path)["trainer"]["config_sha256"] == digest
    finally:
        store.close()
    # the run folder is not part of the run's identity: a moved folder hashes the same
    assert config_sha256(resolve(config("/elsewhere", total=6))) == digest


def test_a_changed_learning_rate_is_refused_with_the_diff(started: Path, tmp_path: Path) -> None:
    run_dir = copy_of(started, tmp_path)
    before = (run_dir / "config.toml").read_text()
    with pytest.raises(ConfigurationError) as refused:
        resume(run_dir, ["model.optimizer.lr=0.001", "trainer.total=9", "model.width=8"])
    message = str(refused.value)
    assert f"the config differs from the one {run_dir} was started with" in message
    assert "  model.optimizer.lr: 0.003 -> 0.001\n" in message
    assert "  model.width: 16 -> 8\n" in message
    assert "  trainer.total: 6 -> 9  (safe to change)\n" in message
    assert "--allow-change model.optimizer.lr --allow-change model.width" in message
    assert (run_dir / "config.toml").read_text() == before
    assert not (run_dir / "config-changes.jsonl").exists()
    assert final_checkpoint(run_dir)["training_state"]["step"] == 6  # nothing trained


def test_safe_keys_change_on_resume_without_asking_and_are_recorded(
    started: Path, tmp_path: Path
) -> None:
    run_dir = copy_of(started, tmp_path)
    # data.workers: declared safe by the data module (ConfigData.safe_to_change_on_resume)
    _, result = resume(run_dir, ["trainer.total=9", "trainer.log_every=2", "data.workers=1"])
    assert result.state.step == 9 and result.steps_trained == 3
    (record,) = [json.loads(line) for line in (run_dir / "config-changes.jsonl").open()]
    assert record["step"] == 6 and record["checkpoint"] == "step-00000006.pt"
    assert record["changes"] == {
        "data.workers": {"old": 0, "new": 1},
        "trainer.log_every": {"old": 1, "new": 2},
        "trainer.total": {"old": 6, "new": 9},
    }
    assert set(record["allowed_by"].values()) == {"safe"}
    assert tomllib.loads((run_dir / "config.toml").read_text())["trainer"]["total"] == 9


def test_allow_change_accepts_a_new_learning_rate_records_it_and_applies_it(
    started: Path, tmp_path: Path
) -> None:
    run_dir = copy_of(started, tmp_path)
    new = ["model.optimizer.lr=0.001", "trainer.total=9"]
    model, result = resume(run_dir, new, allow=("model.optimizer.lr",))
    assert result.state.step == 9
    (record,) = [json.loads(line) for line in (run_dir / "config-changes.jsonl").open()]
    assert record["step"] == 6
    assert record["changes"]["model.optimizer.lr"] == {"old": 0.003, "new": 0.001}
    assert record["allowed_by"] == {"model.optimizer.lr": "allow_change", "trainer.total": "safe"}
    new_digest = config_sha256(resolve(config(str(run_dir)), new))
    assert record["sha256"] == {
        "old": config_sha256(resolve(config(str(run_dir), total=6))),
        "new": new_digest,
    }
    final = final_checkpoint(run_dir)
    assert final["trainer"]["config_sha256"] == new_digest
    assert final["trainer"]["config"] == without_run_dir(resolve(config(str(run_dir)), new))
    # The checkpoint's optimizer had lr 3e-3; the new rate went on through StepLR(3, 0.5):
    # 1e-3 * 0.5 ** (9 // 3), not the old 3e-3 * 0.125.
    group = model.optimizer.param_groups[0]
    assert group["initial_lr"] == 0.001
    assert group["lr"] == pytest.approx(0.001 * 0.5**3, rel=1e-12)
    assert model.scheduler.base_lrs == [0.001]
    saved_group = final["model"]["optimizers"]["optimizer"]["param_groups"][0]
    assert saved_group["lr"] == group["lr"]

    # resumed again, longer: the checkpoint has the new rate already; it is not scaled twice
    model, again = resume(run_dir, ["model.optimizer.lr=0.001", "trainer.total=10"])
    assert again.state.step == 10
    records = (run_dir / "config-changes.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["changes"] == {"trainer.total": {"old": 9, "new": 10}}
    assert model.optimizer.param_groups[0]["initial_lr"] == 0.001
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(0.001 * 0.5**3, rel=1e-12)


def test_allow_change_of_a_whole_table(started: Path, tmp_path: Path) -> None:
    run_dir = copy_of(started, tmp_path)
    model, result = resume(
        run_dir,
        ["model.scheduler.gamma=0.9", "model.optimizer.weight_decay=0.5", "trainer.total=7"],
        allow=("model.scheduler", "model.optimizer"),
    )
    assert result.state.step == 7
    assert model.scheduler.gamma == 0.9
    assert model.optimizer.param_groups[0]["weight_decay"] == 0.5


def test_helios_fit_run_dir_refuses_a_new_learning_rate_then_allows_it(
    started: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_of(started, tmp_path)
    change = ["--set", "model.optimizer.lr=0.002", "--set", "trainer.total=7"]
    assert helios_command(["fit", str(run_dir), *change]) == 2
    error = capsys.readouterr().err
    assert error.startswith("helios fit: error: the config differs from the one")
    assert "  model.optimizer.lr: 0.003 -> 0.002\n" in error
    assert "  trainer.total: 6 -> 7  (safe to change)\n" in error
    assert "pass --allow-change model.optimizer.lr (allow_change= in Python)" in error

    allowed = ["fit", str(run_dir), *change, "--allow-change", "model.optimizer.lr"]
    assert helios_command(allowed) == 0
    assert "trained to step 7 (resumed from step-00000006.pt)" in capsys.readouterr().out
    (record,) = [json.loads(line) for line in (run_dir / "config-changes.jsonl").open()]
    assert record["step"] == 6
    assert record["allowed_by"] == {"model.optimizer.lr": "allow_change", "trainer.total": "safe"}
    saved = tomllib.loads((run_dir / "config.toml").read_text())
    assert saved["model"]["optimizer"]["lr"] == 0.002 and saved["trainer"]["total"] == 7
    group = final_checkpoint(run_dir)["model"]["optimizers"]["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == 0.002
