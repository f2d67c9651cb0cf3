"""Runs from a config: what is checked before anything runs, overrides, print-config, plugins.

In-process and cheap: only the dry run trains (two steps).
"""

from __future__ import annotations

import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from config_models import ConfigModel, config

from helios.core import NETWORK_REGISTRY, ConfigurationError, load_registry_entry_points
from helios.trainer import from_config
from helios.trainer._cli import main as helios_command
from helios.trainer._config import ConfigFactory, resolve, to_toml


def with_changes(run_dir: Path, section: str, **values: Any) -> dict[str, Any]:
    changed = config(str(run_dir))
    changed[section].update(values)
    return changed


# ---- item 2: every error names the key, the value and what was expected -------------------


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        (
            "model",
            {"optimizer": {"type": "AdamX", "lr": 0.1}},
            "model.optimizer.type 'AdamX' is not registered .*closest: 'Adam' \\(optimizers\\)",
        ),
        (
            "model",
            {"optimizer": {"type": "AdamW", "lrr": 0.1}},
            "model.optimizer.lrr: AdamW takes no argument 'lrr' \\(did you mean 'lr'\\?\\); "
            "it takes params, lr, betas",
        ),
        ("model", {"widht": 3}, "model.widht: ConfigModel takes no argument 'widht'.*'width'"),
        ("model", {"width": "wide"}, "model.width: expected int, got 'wide' \\(str\\)"),
        ("model", {"width": True}, "model.width: expected int, got True \\(bool\\)"),
        ("model", {"dropout": "0.3"}, "model.dropout: expected float, got '0.3' \\(str\\)"),
        (
            "model",
            {"loss": {"type": "AdamW"}},
            "model.loss: torch.optim.adamw.AdamW does not fit the annotation "
            "torch.nn.modules.module.Module \\| None",
        ),
        ("model", {"optimizer": {"lr": 0.1}}, "model.optimizer: expected .*got a table without"),
        ("trainer", {"total": "ten"}, "trainer.total: expected int, got 'ten' \\(str\\)"),
        ("trainer", {"unit": "steps"}, "trainer.unit: expected Literal\\['epoch', 'iteration'\\]"),
        ("trainer", {"totl": 3}, "trainer.totl: Trainer takes no argument 'totl'.*'total'"),
        ("trainer", {"type": "Trainer"}, "trainer.type: the \\[trainer\\] table holds"),
        ("data", {"class": "toy_training:NoSuchData"}, "has no class 'NoSuchData'"),
        ("data", {"class": "toy_training:ToyData", "type": "X"}, "data has both 'type' and"),
    ],
)
def test_config_errors_name_the_key_the_value_and_what_was_expected(
    tmp_path: Path, section: str, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve(with_changes(tmp_path, section, **values))


def test_a_registered_model_by_type_and_its_missing_name(tmp_path: Path) -> None:
    from helios.core import MODEL_REGISTRY

    bad = config(str(tmp_path))
    bad["model"] = {"type": "ConfigModle"}
    if "ConfigModel" not in MODEL_REGISTRY:
        MODEL_REGISTRY.register(ConfigModel)
    with pytest.raises(ConfigurationError, match=r"searched: models.*closest: 'ConfigModel'"):
        resolve(bad)
    bad["model"] = {"type": "ConfigModel", "width": 5}
    model, _, _ = from_config(bad)
    assert isinstance(model, ConfigModel) and model.width == 5


def test_a_config_without_a_section_or_with_an_extra_one_is_refused(tmp_path: Path) -> None:
    missing = config(str(tmp_path))
    del missing["data"]
    with pytest.raises(ConfigurationError, match="no \\[data\\] table"):
        resolve(missing)
    extra = {**config(str(tmp_path)), "trianer": {}}
    with pytest.raises(ConfigurationError, match=r"'trianer'.*did you mean 'trainer'"):
        resolve(extra)
    no_total = config(str(tmp_path))
    del no_total["trainer"]["total"]
    with pytest.raises(ConfigurationError, match="trainer: Trainer needs the argument 'total'"):
        resolve(no_total)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.optimizer.lrr=0.1",
            "--set model.optimizer.lrr: there is no key 'lrr' in "
            "model.optimizer \\(did you mean 'lr'\\?\\); it takes params, lr",
        ),
        (
            "model.optimiser.lr=0.1",
            "--set model.optimiser.lr: model has no table 'optimiser' "
            "\\(did you mean 'optimizer'\\?\\)",
        ),
        ("trainer.totl=3", "there is no key 'totl' in trainer \\(did you mean 'total'"),
        ("total=3", "the config's top level holds only the tables"),
        ("trainer.total", "is not of the form key.path=value"),
    ],
)
def test_set_on_a_key_that_does_not_exist_says_so(
    tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve(config(str(tmp_path)), [override])


def test_set_overrides_reach_the_objects(tmp_path: Path) -> None:
    model, data, trainer = from_config(
        config(str(tmp_path)),
        [
            "model.optimizer.lr=1e-4",
            "model.optimizer.betas=[0.8, 0.9]",
            "model.width=7",
            "model.scheduler.gamma=0.25",
            "data.batch_size=4",
            "trainer.total=5",
            "trainer.log_every=2",  # written in the file
            "trainer.keep_best=2",  # a default, not in the file
            "trainer.timeout=60",
            f"trainer.run_dir={tmp_path / 'other'}",
        ],
    )
    assert isinstance(model.make_optimizer, ConfigFactory)
    assert model.make_optimizer.keywords["lr"] == 1e-4
    assert model.make_optimizer.keywords["betas"] == (0.8, 0.9)
    assert model.width == 7 and data.batch_size == 4
    settings = trainer.settings
    assert (settings.total, settings.log_every, settings.keep_best) == (5, 2, 2)
    assert settings.timeout.total_seconds() == 60 and settings.run_dir == tmp_path / "other"
    model.setup()
    assert model.net[0].out_features == 7
    optimizer, scheduler = model.optimizer, model.scheduler
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["lr"] == 1e-4
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.gamma == 0.25
    assert isinstance(model.loss, torch.nn.BCEWithLogitsLoss)  # annotated nn.Module: an object
    assert trainer.settings.config is not None
    assert trainer.settings.config["model"]["optimizer"]["lr"] == 1e-4


def test_print_config_fills_every_default_and_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "run.toml"
    file.write_text(to_toml(config(str(tmp_path / "run"))))
    assert helios_command(["fit", str(file), "--print-config", "--set", "model.width=9"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed == resolve(config(str(tmp_path / "run")), ["model.width=9"])
    assert printed["model"]["width"] == 9
    assert printed["model"]["optimizer"]["eps"] == 1e-08  # AdamW's default
    assert printed["model"]["scheduler"]["last_epoch"] == -1
    assert printed["trainer"]["keep_checkpoints"] == 3 and printed["trainer"]["timeout"] == 1800
    assert printed["data"]["workers"] == 0
    assert not (tmp_path / "run").exists()


def test_helios_fit_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as leaving:
        helios_command(["fit", "--help"])
    assert leaving.value.code == 0
    text = capsys.readouterr().out
    assert "usage: helios fit" in text
    for option in ("--set", "--allow-change", "--print-config", "--dry-run"):
        assert option in text


def test_the_command_prints_config_errors_whole_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "run.toml"
    file.write_text(to_toml(config(str(tmp_path / "run"))))
    assert helios_command(["fit", str(file), "--set", "model.optimizer.type=SDG"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("helios fit: error: model.optimizer.type 'SDG' is not registered")
    assert "'SGD' (optimizers)" in error
    file.write_text("[model\n")
    assert helios_command(["fit", str(file)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert helios_command(["fit", str(tmp_path)]) == 2  # a folder without config.toml
    assert "without config.toml" in capsys.readouterr().err


def test_dry_run_trains_a_few_steps_and_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    file = tmp_path / "run.toml"
    file.write_text(to_toml(config(str(run_dir))))
    assert helios_command(["fit", str(file), "--dry-run", "3"]) == 0
    assert "dry run: 3 steps trained; nothing written to" in capsys.readouterr().out
    assert not run_dir.exists()


# ---- third-party registrations through the helios.registries entry points ----------------


def test_an_installed_packages_entry_point_registers_a_network_found_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny distribution on sys.path, read by importlib.metadata as pip would leave it."""
    site = tmp_path / "site-packages"
    (site / "tiny_helios_nets").mkdir(parents=True)
    (site / "tiny_helios_nets" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from helios.core import NETWORK_REGISTRY

            @NETWORK_REGISTRY.register
            class TinyPluginNet(nn.Linear):
                def __init__(self, width: int = 3) -> None:
                    super().__init__(width, 1)
            """
        )
    )
    info = site / "tiny_helios_nets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-helios-nets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[helios.registries]\ntiny = tiny_helios_nets\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "tiny_helios_nets", raising=False)
    try:
        assert "TinyPluginNet" not in NETWORK_REGISTRY
        load_registry_entry_points(reload=True)
        assert "TinyPluginNet" in NETWORK_REGISTRY
        assert load_registry_entry_points()["tiny"] == "tiny_helios_nets"
        net = NETWORK_REGISTRY.create("TinyPluginNet", width=4)
        assert net.in_features == 4
        changed = with_changes(tmp_path, "model", loss={"type": "TinyPluginNet", "width": 2})
        model, _, _ = from_config(changed)
        assert type(model.loss).__name__ == "TinyPluginNet" and model.loss.in_features == 2
    finally:
        NETWORK_REGISTRY._entries.pop("TinyPluginNet", None)


def test_an_entry_point_that_fails_to_load_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    info = site / "broken_helios_nets-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-nets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[helios.registries]\nbroken = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ConfigurationError, match="entry point 'broken' = 'no_such_module_xyz'"):
        load_registry_entry_points(reload=True)
