"""The digits example from its config file builds the same objects as the script: same run.

``docs/examples/digits.toml`` trained with ``from_config`` (the path of ``helios fit``) and the
script's own ``Classifier()``, ``Digits()`` and ``Trainer`` arguments with the same seed end with
``torch.equal`` weights, optimizer and scheduler states and the same test accuracy. Six steps
(the same objects give the same run at any length), in this process, without loader workers
(results do not depend on their number).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from resume_checks import final_checkpoint
from state_checks import assert_nested_equal

from helios.trainer import Trainer, from_config
from helios.trainer._objects import load_object

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"
TOML = EXAMPLES / "digits.toml"


@pytest.mark.slow
def test_digits_from_its_toml_trains_exactly_as_the_script(tmp_path: Path) -> None:
    script, configured = tmp_path / "script", tmp_path / "toml"
    # the script's objects, as its main() makes them (6 steps, no workers, no progress bar)
    classifier = load_object(f"{EXAMPLES / 'digits.py'}:Classifier")
    digits = load_object(f"{EXAMPLES / 'digits.py'}:Digits")
    settings = tomllib.loads(TOML.read_text())["trainer"]
    assert settings == {"run_dir": settings["run_dir"], "unit": "epoch", "total": 12,
                        "log_every": 7, "seed": 7}  # fmt: skip  # digits.py's main() passes these
    trainer = Trainer(script, unit="iteration", total=6, log_every=7, seed=7, progress=False)
    trainer.fit(classifier(), digits(workers=0))
    script_accuracy = trainer.test(classifier(), digits(workers=0), "last")["accuracy"]

    model, data, from_toml = from_config(
        TOML,
        ["trainer.unit=iteration", "trainer.total=6", "trainer.progress=false", "data.workers=0",
         f"trainer.run_dir={configured}"],
    )  # fmt: skip
    assert type(model) is classifier and type(data) is digits  # the script's own classes
    from_toml.fit(model, data)
    model_again, data_again, _ = from_config(TOML, ["data.workers=0"])
    toml_accuracy = from_toml.test(model_again, data_again, "last")["accuracy"]

    a, b = final_checkpoint(script), final_checkpoint(configured)
    assert a["training_state"]["step"] == 6
    for part in ("model", "training_state", "data", "rng"):
        assert_nested_equal(b[part], a[part], part)
    assert toml_accuracy == script_accuracy
