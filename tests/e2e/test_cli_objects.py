"""``--model``/``--data``: a class or factory, in a module or a file anywhere, with arguments."""

from __future__ import annotations

import textwrap
from pathlib import Path

import onnxruntime
import pytest
from verify_jobs import Blobs, WellBehaved

from helios.trainer import Trainer
from helios.trainer._cli import main

USER_FILE = textwrap.dedent(
    """
    from verify_jobs import WellBehaved  # a neighbour module: importable as in a script


    class NeedsArgs(WellBehaved):
        def __init__(self, tag: str, scale: float = 1.0) -> None:
            super().__init__()
            self.tag, self.scale = tag, scale


    def make_model(tag: str = "factory") -> WellBehaved:
        return NeedsArgs(tag)


    def not_a_model() -> int:
        return 3
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-objects")
    Trainer(
        folder, unit="iteration", total=2, progress=False, tensorboard=False, devices="cpu"
    ).fit(WellBehaved(), Blobs())
    return sorted((folder / "checkpoints").glob("step-*.pt"))[-1]


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere" / "models"  # not the current folder, not on sys.path
    folder.mkdir(parents=True)
    path = folder / "my_models.py"
    path.write_text(USER_FILE)
    return path


@pytest.mark.parametrize(
    ("name", "args"),
    [("NeedsArgs", '{"tag": "a", "scale": 2.0}'), ("make_model", None)],
)
def test_export_with_a_class_or_factory_from_a_file_with_arguments(
    checkpoint: Path, user_file: Path, tmp_path: Path, name: str, args: str | None
) -> None:
    out = tmp_path / "net.onnx"
    extra = ["--model-args", args] if args is not None else []
    command = ["export", str(checkpoint), "--model", f"{user_file}:{name}", *extra]
    assert main([*command, "--out", str(out)]) == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]


@pytest.mark.parametrize(
    ("spec", "args", "message"),
    [
        (
            "{file}:NeedsArgs",
            None,
            "--model '{file}:NeedsArgs': NeedsArgs(**{{}}) failed: TypeError: ",
        ),
        ("{file}:NeedsArgs", '{"tag": 1, "nope": 2}', "failed: TypeError: "),
        ("{file}:NeedsArgs", '["a"]', "is a JSON list; expected an object of keyword arguments"),
        ("{file}:NeedsArgs", "{tag: a}", "--model-args '{{tag: a}}' is not JSON"),
        ("{file}:not_a_model", None, "not_a_model(...) returned a int; expected a helios.core"),
        ("{file}:Missing", None, "has no class 'Missing'"),
        ("{file}x:NeedsArgs", None, "there is no file"),
        ("verify_jobs:Blobs", None, "which is not a helios.core.Model"),
    ],
)
def test_what_cannot_be_built_is_one_line_and_exit_2(
    checkpoint: Path,
    user_file: Path,
    capsys: pytest.CaptureFixture[str],
    spec: str,
    args: str | None,
    message: str,
) -> None:
    extra = ["--model-args", args] if args is not None else []
    command = ["export", str(checkpoint), "--model", spec.format(file=user_file), *extra]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("helios export: error: ") and err.count("\n") == 1, err
    assert message.format(file=user_file) in err


def test_a_missing_argument_hint_names_the_option(
    checkpoint: Path, user_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(checkpoint), "--model", f"{user_file}:NeedsArgs"]) == 2
    err = capsys.readouterr().err
    assert "missing 1 required positional argument: 'tag'" in err
    assert "pass its arguments as a JSON object with --model-args" in err


def test_verify_resume_checks_both_objects_before_training(
    user_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--model", f"{user_file}:make_model", "--data", "verify_jobs:Blobs"]
    assert main(["verify-resume", *args, "--data-args", '{"size": 3}']) == 2
    err = capsys.readouterr().err
    assert "--data 'verify_jobs:Blobs': Blobs(**{'size': 3}) failed: TypeError" in err
