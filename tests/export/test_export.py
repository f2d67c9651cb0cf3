"""export_onnx end to end: real torch.onnx (dynamo) export, onnx.checker and onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree

from helios.export import ExportError, ExportReport, export_onnx


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.norm(self.conv(image))).mean(dim=(2, 3))
        logits: torch.Tensor = self.head(self.dropout(features))
        return logits


class TwoInputMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Linear(4, 8)
        self.right = nn.Linear(3, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.left(a) + self.right(b))
        result: torch.Tensor = self.out(hidden)
        return result


class DictHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(5, 6)
        self.classes = nn.Linear(6, 3)
        self.box = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        hidden = torch.relu(self.trunk(x))
        logits = self.classes(hidden)
        return {
            "logits": logits,
            "aux": (self.box(hidden), logits.argmax(dim=1)),
        }


class SequenceLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        sequence, (hidden, cell) = self.lstm(x)
        return self.head(sequence[:, -1]), (hidden, cell)


class TokenClassifier(nn.Module):
    """Integer inputs: verification must draw token ids inside the vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(self.embedding(tokens).mean(dim=1))
        return result


class DataDependentBranch(nn.Module):
    """Cannot be exported: which branch runs depends on the values of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear(x).sum() > 0:
            return x * 2
        return x - 1


class CallCounter(nn.Module):
    """Exports, but its output depends on Python state the trace freezes: parity must fail."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.calls


def onnxruntime_outputs(path: Path, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [graph_input.name for graph_input in session.get_inputs()]
    outputs: list[np.ndarray] = session.run(
        None, {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}
    )
    return outputs


def assert_onnx_matches(
    module: nn.Module, path: Path, make: Callable[[int], tuple[torch.Tensor, ...]]
) -> None:
    """Our own parity check, independent of the one export_onnx ran, at batch sizes 1 and 7."""
    module.eval()
    for batch_size in (1, 7):
        inputs = make(batch_size)
        with torch.no_grad():
            expected = pytree.tree_leaves(module(*inputs))
        actual = onnxruntime_outputs(path, inputs)
        assert len(actual) == len(expected)
        for produced, reference in zip(actual, expected, strict=True):
            assert tuple(produced.shape) == tuple(reference.shape)
            assert reference.shape[0] == batch_size or reference.dim() == 3  # LSTM state: dim 1
            torch.testing.assert_close(torch.from_numpy(produced), reference, rtol=1e-4, atol=1e-5)


CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[int], tuple[torch.Tensor, ...]]]] = {
    "cnn": (SmallCNN, lambda n: (torch.randn(n, 1, 8, 8),)),
    "mlp_two_inputs": (TwoInputMLP, lambda n: (torch.randn(n, 4), torch.randn(n, 3))),
    "dict_outputs": (DictHeads, lambda n: (torch.randn(n, 5),)),
    "lstm": (SequenceLSTM, lambda n: (torch.randn(n, 6, 3),)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exports_with_onnxruntime_parity_at_batch_1_and_7(case: str, tmp_path: Path) -> None:
    build, make = CASES[case]
    torch.manual_seed(0)
    module = build()
    path = tmp_path / "nested" / "folder" / f"{case}.onnx"

    report = export_onnx(module, make(2), path)

    assert isinstance(report, ExportReport)
    assert report.path == path
    assert path.is_file()
    assert report.file_size == path.stat().st_size
    assert report.batch_sizes == (1, 7)
    assert report.max_abs_error is not None
    assert report.max_abs_error <= 1e-4
    assert report.opset == onnx.load(str(path)).opset_import[0].version
    assert report.seconds > 0
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    assert_onnx_matches(module, path, make)


def test_output_names_follow_the_output_structure(tmp_path: Path) -> None:
    torch.manual_seed(0)
    report = export_onnx(DictHeads(), torch.randn(2, 5), tmp_path / "heads.onnx")

    assert report.input_names == ("x",)
    assert report.output_names == ("logits", "aux.0", "aux.1")
    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["logits", "aux.0", "aux.1"]


def test_given_input_and_output_names_are_used(tmp_path: Path) -> None:
    torch.manual_seed(0)
    report = export_onnx(
        TwoInputMLP(),
        (torch.randn(2, 4), torch.randn(2, 3)),
        tmp_path / "mlp.onnx",
        input_names=["left", "right"],
        output_names=["scores"],
        opset=18,
    )

    assert report.input_names == ("left", "right")
    assert report.output_names == ("scores",)
    assert report.opset == 18
    model = onnx.load(str(report.path))
    assert [value.name for value in model.graph.input] == ["left", "right"]
    assert [value.name for value in model.graph.output] == ["scores"]


def test_metadata_is_stored_in_the_file_and_readable_in_onnxruntime(tmp_path: Path) -> None:
    from helios.export import __version__

    torch.manual_seed(0)
    report = export_onnx(
        DictHeads(),
        torch.randn(2, 5),
        tmp_path / "heads.onnx",
        metadata={"helios.checkpoint.step": "120", "helios.checkpoint.sha256": "ab" * 32},
    )

    props = {prop.key: prop.value for prop in onnx.load(str(report.path)).metadata_props}
    assert props == {
        "helios.export.version": __version__,
        "helios.checkpoint.step": "120",
        "helios.checkpoint.sha256": "ab" * 32,
    }
    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == props
    assert report.verified  # the file checked by onnxruntime is the one carrying the metadata


def test_integer_inputs_are_drawn_inside_the_example_range(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tokens = torch.tensor([[0, 3, 9], [9, 1, 2]])  # the whole vocabulary range, 0..9

    report = export_onnx(TokenClassifier(), tokens, tmp_path / "tokens.onnx")

    assert report.batch_sizes == (1, 7)
    assert report.max_abs_error is not None
    assert report.max_abs_error <= 1e-5


def test_a_fixed_batch_is_checked_at_the_example_batch_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    report = export_onnx(
        SmallCNN(), torch.randn(2, 1, 8, 8), tmp_path / "cnn.onnx", dynamic_batch=False
    )

    assert report.batch_sizes == (2,)
    graph_input = onnx.load(str(report.path)).graph.input[0]
    assert graph_input.type.tensor_type.shape.dim[0].dim_value == 2


def test_fixed_batch_with_other_verify_batch_sizes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"verify_batch_sizes=\(1, 7\).*dynamic_batch=False"):
        export_onnx(
            SmallCNN(),
            torch.randn(2, 1, 8, 8),
            tmp_path / "cnn.onnx",
            dynamic_batch=False,
            verify_batch_sizes=[1, 7],
        )
    assert not (tmp_path / "cnn.onnx").exists()


def test_dynamic_shapes_override_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = TokenClassifier()
    sequence = torch.export.Dim("sequence", min=2)
    tokens = torch.tensor([[0, 3, 9], [9, 1, 2]])

    report = export_onnx(module, tokens, tmp_path / "tokens.onnx", dynamic_shapes=({1: sequence},))

    dims = onnx.load(str(report.path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 2  # the batch is fixed: the spec did not free it
    assert dims[1].dim_param == "sequence"
    assert report.batch_sizes == (2,)
    longer = (torch.randint(0, 10, (2, 11)),)
    with torch.no_grad():
        expected = module.eval()(*longer)
    actual = torch.from_numpy(onnxruntime_outputs(report.path, longer)[0])
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_verify_false_skips_onnxruntime(tmp_path: Path) -> None:
    torch.manual_seed(0)
    report = export_onnx(CallCounter(), torch.randn(2, 3), tmp_path / "counter.onnx", verify=False)

    assert report.path.is_file()
    assert report.batch_sizes == ()
    assert report.max_abs_error is None
    assert report.max_rel_error is None
    assert not report.verified
    assert "not verified" in str(report)


def test_unexportable_module_raises_export_error_naming_module_and_cause(
    tmp_path: Path,
) -> None:
    path = tmp_path / "branch.onnx"
    with pytest.raises(ExportError) as caught:
        export_onnx(DataDependentBranch(), torch.randn(2, 4), path)

    message = str(caught.value)
    assert "DataDependentBranch" in message
    assert "data-dependent" in message
    assert "if self.linear(x).sum() > 0:" in message  # the user's line that cannot be traced
    assert caught.value.__cause__ is not None
    assert isinstance(caught.value, RuntimeError)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


@torch.library.custom_op("helios_export_test::shuffle_rows", mutates_args=())
def shuffle_rows(x: torch.Tensor) -> torch.Tensor:
    return x.flip(0)


@shuffle_rows.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class UsesCustomOp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = shuffle_rows(x)
        return result


def test_op_without_onnx_translation_raises_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"UsesCustomOp.*helios_export_test\.shuffle_rows"):
        export_onnx(UsesCustomOp(), torch.randn(2, 4), tmp_path / "custom.onnx")
    assert list(tmp_path.iterdir()) == []


def test_parity_mismatch_raises_and_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "counter.onnx"
    path.write_bytes(b"the previous export")

    with pytest.raises(ExportError) as caught:
        export_onnx(CallCounter(), torch.randn(2, 3), path)

    message = str(caught.value)
    assert "CallCounter" in message
    assert "output 'output' at batch size" in message
    assert "values outside rtol=0.0001, atol=1e-05" in message
    assert "keep_on_failure=True" in message
    report = caught.value.report
    assert report is not None
    assert report.max_abs_error is not None
    assert report.max_abs_error > 1e-5
    assert path.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter.onnx"]


def test_parity_mismatch_keeps_the_file_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "counter.onnx"

    with pytest.raises(ExportError, match="kept at"):
        export_onnx(CallCounter(), torch.randn(2, 3), path, keep_on_failure=True)

    onnx.checker.check_model(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter.onnx"]


def modes(module: nn.Module) -> list[bool]:
    return [submodule.training for submodule in module.modules()]


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_training_mode_and_grad_flags_are_restored(grad_enabled: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = SmallCNN().train()
    module.norm.eval()  # a frozen BatchNorm inside a training network
    module.conv.weight.requires_grad_(False)
    before = modes(module)
    flags = [parameter.requires_grad for parameter in module.parameters()]

    with torch.set_grad_enabled(grad_enabled):
        export_onnx(module, torch.randn(2, 1, 8, 8), tmp_path / "cnn.onnx")
        assert torch.is_grad_enabled() is grad_enabled

    assert modes(module) == before == [True, True, False, True, True]
    assert [parameter.requires_grad for parameter in module.parameters()] == flags


def test_training_mode_is_restored_after_a_failed_export(tmp_path: Path) -> None:
    module = DataDependentBranch().train()
    with pytest.raises(ExportError):
        export_onnx(module, torch.randn(2, 4), tmp_path / "branch.onnx")
    assert module.training
    assert module.linear.training
    assert torch.is_grad_enabled()


def test_export_is_silent_and_leaves_the_global_rng_alone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    module = TwoInputMLP()
    example = (torch.randn(2, 4), torch.randn(2, 3))
    capfd.readouterr()
    rng_before = torch.get_rng_state()

    report = export_onnx(module, example, tmp_path / "mlp.onnx")

    assert torch.equal(torch.get_rng_state(), rng_before)
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""
    assert isinstance(report.exporter_log, str)


def test_report_reads_well() -> None:
    report = ExportReport(
        path=Path("runs/model.onnx"),
        opset=18,
        file_size=3 * 1024 * 1024,
        seconds=1.5,
        max_abs_error=2e-7,
        max_rel_error=1e-6,
        batch_sizes=(1, 7),
        input_names=("image",),
        output_names=("logits",),
    )
    text = str(report)
    assert "runs/model.onnx" in text
    assert "opset 18" in text
    assert "3.0 MiB" in text
    assert "batch sizes 1, 7" in text
    assert "2e-07" in text


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"input_names": ["a"]}, ValueError, r"input_names=\['a'\] has 1 names"),
        ({"output_names": ["a", "b"]}, ValueError, r"output_names=.*returns 1 tensors"),
        ({"verify_batch_sizes": [0]}, ValueError, r"verify_batch_sizes=\(0,\)"),
        ({"atol": -1.0}, ValueError, r"atol=-1.0"),
        ({"metadata": {"step": 3}}, ValueError, r"metadata=\{'step': 3\}: expected"),
    ],
)
def test_bad_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], pattern: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=pattern):
        export_onnx(
            TwoInputMLP(), (torch.randn(2, 4), torch.randn(2, 3)), tmp_path / "x.onnx", **kwargs
        )
    assert list(tmp_path.iterdir()) == []


def test_example_without_tensors_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="holds no tensor"):
        export_onnx(TwoInputMLP(), (1.0, 2.0), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module"):
        export_onnx(lambda x: x, (torch.randn(2),), tmp_path / "x.onnx")  # type: ignore[arg-type]


def test_module_failing_on_its_example_raises_export_error(tmp_path: Path) -> None:
    module = TwoInputMLP().train()
    with pytest.raises(ExportError, match=r"TwoInputMLP raised on example_inputs.*RuntimeError"):
        export_onnx(module, (torch.randn(2, 5), torch.randn(2, 3)), tmp_path / "x.onnx")
    assert module.training
    assert list(tmp_path.iterdir()) == []
