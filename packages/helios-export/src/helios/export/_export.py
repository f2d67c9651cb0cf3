"""``export_onnx``: a network to an ONNX file that onnxruntime has been seen to reproduce.

The export itself is ``torch.onnx.export(dynamo=True)`` (``torch.export`` underneath, onnxscript
for the translation). Around it this module adds what a training library owes its users:

* the network is traced in eval mode without gradients, and every submodule's training flag,
  every parameter's ``requires_grad`` and the global grad mode are restored afterwards, even on
  failure, so exporting in the middle of training changes nothing;
* dimension 0 of the inputs is a free batch size unless asked otherwise;
* the file is written to a temporary folder beside ``path``, checked there (``onnx.checker``,
  then onnxruntime at batch sizes other than the example's) and only then renamed into place, so
  ``path`` never holds a half-written or unchecked file;
* the exporter's console output (pages of graphs and warnings) is captured into the report and
  the debug log instead of the user's terminal;
* every failure is an :class:`~helios.export.ExportError` that names the module and the cause.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from helios.core import unwrap
from helios.export._errors import ExportError
from helios.export._parity import (
    Mismatch,
    ParityResult,
    compare_outputs,
    make_inputs,
    run_onnxruntime,
)
from helios.export._report import ExportReport

__all__ = ["export_onnx"]

logger = logging.getLogger(__name__)

#: The longest excerpt of an exporter error quoted in an ExportError's message.
_MAX_CAUSE_CHARS = 600

#: How torch.export shows the user's source line that raised.
_FAILING_CALL = re.compile(
    r"The following call raised this error:\s*\n\s*(?P<where>File .+?, line \d+, in \S+)\s*\n"
    r"(?P<code>[^\n]+)"
)


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[Any, ...] | torch.Tensor,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    dynamic_shapes: Any = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int | None = None,
    verify: bool = True,
    verify_batch_sizes: Sequence[int] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    keep_on_failure: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> ExportReport:
    """Export ``module`` to an ONNX file and check that onnxruntime reproduces it.

    Example:
        >>> report = export_onnx(net, (torch.randn(2, 1, 28, 28),), "runs/digits/model.onnx")
        >>> print(report)  # doctest: +SKIP

    Args:
        module: the network (DDP and ``torch.compile`` wrappers are looked through).
        example_inputs: the positional arguments of one forward call: a tuple, or a single
            tensor. Nested tuples, lists and dicts of tensors are accepted; non-tensor arguments
            are baked into the graph as constants.
        path: where the ``.onnx`` file goes; missing parent folders are created. An existing
            file is replaced only once the new one has passed the checks.
        dynamic_batch: make dimension 0 of every input tensor a free batch size (one shared
            dimension for the inputs whose dimension 0 equals the first input's).
        dynamic_shapes: a ``torch.export`` ``dynamic_shapes`` specification; overrides
            ``dynamic_batch`` when given.
        input_names: names of the graph inputs, one per input tensor (default: the names of
            ``forward``'s parameters).
        output_names: names of the graph outputs, one per output tensor in flattening order
            (default: ``output`` for a single tensor, ``output_0``, ``output_1``, ... for a
            tuple or list, the keys for a dict, joined with ``.`` when nested).
        opset: the ONNX opset to target (``None``: the exporter's default).
        verify: run ``onnx.checker`` and compare onnxruntime (CPU) with PyTorch.
        verify_batch_sizes: the batch sizes to compare at (default: 1 and the example's batch
            size plus 5 when the batch is dynamic, the example's batch size when it is not).
        rtol: relative tolerance of the comparison.
        atol: absolute tolerance of the comparison.
        keep_on_failure: when a check fails, still move the file to ``path`` for inspection
            (default: leave ``path`` as it was).
        metadata: key/value strings stored in the file's ``metadata_props`` (where it came
            from: a checkpoint's step and SHA-256, say), readable with ``onnx.load(...)
            .metadata_props`` or onnxruntime's ``InferenceSession.get_modelmeta()
            .custom_metadata_map``. ``helios.export.version`` is always added.

    Returns:
        The report: path, opset, size, time, the largest errors and the batch sizes checked.

    Note:
        While the exporter runs, ``sys.stdout`` and ``sys.stderr`` are redirected (to capture
        its output), which other threads printing at that moment share.

    Raises:
        ExportError: the exporter failed (the message names the module and the root cause), the
            checker rejected the file, or onnxruntime failed or disagreed with PyTorch.
        TypeError: ``module`` is not a module or ``example_inputs`` holds no tensor.
        ValueError: an argument has a value that cannot work (named in the message).
    """
    started = time.perf_counter()
    network = _unwrap(module)
    args = _as_arguments(example_inputs)
    example_tensors = [leaf for leaf in pytree.tree_leaves(args) if isinstance(leaf, torch.Tensor)]
    _check_arguments(network, example_tensors, input_names, verify_batch_sizes, rtol, atol)
    entries = _metadata_entries(metadata)
    example_batch = int(example_tensors[0].shape[0]) if example_tensors[0].dim() else 1
    if not verify_batch_sizes:
        verify_batch_sizes = None
    static_batch = dynamic_shapes is None and not dynamic_batch
    if static_batch and verify_batch_sizes and set(verify_batch_sizes) != {example_batch}:
        raise ValueError(
            f"verify_batch_sizes={tuple(verify_batch_sizes)} asks for batch sizes other than the "
            f"example's ({example_batch}), but dynamic_batch=False exports a fixed batch size; "
            "pass dynamic_batch=True or leave verify_batch_sizes out"
        )
    batch_requested = dynamic_shapes is None and dynamic_batch
    if batch_requested:
        dynamic_shapes = _batch_dynamic_shapes(args, example_batch)

    target = Path(path)
    if target.is_dir():
        raise ValueError(f"path={str(path)!r} is a folder; expected the path of an .onnx file")
    target.parent.mkdir(parents=True, exist_ok=True)
    module_name = type(network).__qualname__

    with _inference(network):
        try:
            reference = network(*args)
        except Exception as error:
            raise ExportError(
                f"{module_name} raised on example_inputs before the export began: "
                f"{type(error).__name__}: {_first_paragraph(error)}"
            ) from error
        output_paths = [
            key_path
            for key_path, leaf in pytree.tree_flatten_with_path(reference)[0]
            if isinstance(leaf, torch.Tensor)
        ]
        names = _output_names(output_names, output_paths, module_name)
        workdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            staged = workdir / target.name
            log = _export(
                network,
                args,
                staged,
                module_name,
                dynamic_shapes=dynamic_shapes,
                input_names=input_names,
                output_names=names,
                opset=opset,
                metadata=entries,
            )
            graph = _Graph(staged)
            result = ParityResult()
            sizes: tuple[int, ...] = ()
            failure: str | None = None
            if verify:
                sizes, failure = _verify(
                    network,
                    args,
                    staged,
                    graph,
                    example_batch=example_batch,
                    batch_sizes=verify_batch_sizes,
                    batch_requested=batch_requested,
                    expected_outputs=len(names),
                    rtol=rtol,
                    atol=atol,
                    result=result,
                )
            if failure is not None and not keep_on_failure:
                file_size = _size_of(workdir)
            else:
                file_size = _publish(workdir, target)
            report = ExportReport(
                path=target,
                opset=graph.opset,
                file_size=file_size,
                seconds=time.perf_counter() - started,
                max_abs_error=result.max_abs_error if sizes else None,
                max_rel_error=result.max_rel_error if sizes else None,
                batch_sizes=sizes,
                input_names=graph.input_names,
                output_names=graph.output_names,
                rtol=rtol,
                atol=atol,
                exporter_log=log,
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    if failure is not None:
        where = (
            f"The file was kept at {target} for inspection."
            if keep_on_failure
            else f"No file was written to {target} (pass keep_on_failure=True to keep it)."
        )
        raise ExportError(
            f"The ONNX export of {module_name} failed verification: {failure} {where}",
            log=log,
            report=report,
        )
    logger.info("%s", report)
    return report


def _unwrap(module: nn.Module) -> nn.Module:
    """The user's network inside DDP and ``torch.compile`` wrappers (``helios.core.unwrap``)."""
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module={type(module).__name__} cannot be exported; expected a torch.nn.Module"
        )
    return unwrap(module)


def _as_arguments(example_inputs: tuple[Any, ...] | torch.Tensor) -> tuple[Any, ...]:
    """The example as a tuple of positional arguments."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    if not isinstance(example_inputs, tuple):
        raise TypeError(
            f"example_inputs is a {type(example_inputs).__name__}; expected a tensor or a tuple "
            "of the forward call's positional arguments"
        )
    return example_inputs


def _check_arguments(
    network: nn.Module,
    example_tensors: Sequence[torch.Tensor],
    input_names: Sequence[str] | None,
    verify_batch_sizes: Sequence[int] | None,
    rtol: float,
    atol: float,
) -> None:
    """Reject arguments that cannot work before spending seconds on an export."""
    if not example_tensors:
        raise TypeError(
            f"example_inputs for {type(network).__qualname__} holds no tensor; expected at least "
            "one input tensor"
        )
    if input_names is not None:
        if isinstance(input_names, str):
            raise TypeError(f"input_names={input_names!r} is a string; expected a list of names")
        if len(input_names) != len(example_tensors):
            raise ValueError(
                f"input_names={list(input_names)} has {len(input_names)} names; expected one per "
                f"input tensor ({len(example_tensors)})"
            )
    if verify_batch_sizes is not None and any(
        not isinstance(size, int) or size < 1 for size in verify_batch_sizes
    ):
        raise ValueError(
            f"verify_batch_sizes={tuple(verify_batch_sizes)}; expected positive integers"
        )
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not value >= 0:
            raise ValueError(f"{name}={value}; expected a tolerance >= 0")


def _batch_dynamic_shapes(args: tuple[Any, ...], example_batch: int) -> tuple[Any, ...]:
    """A ``dynamic_shapes`` spec making dimension 0 one shared ``batch`` dimension.

    Only the tensors whose dimension 0 equals the example's batch size take part: a tensor of
    another leading size (a lookup table passed as an input) keeps its shape.
    """
    batch = torch.export.Dim("batch", min=1)

    def spec(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor) and leaf.dim() and leaf.shape[0] == example_batch:
            return {0: batch}
        return None

    shapes: tuple[Any, ...] = tuple(pytree.tree_map(spec, arg) for arg in args)
    return shapes


def _output_names(
    given: Sequence[str] | None, paths: Sequence[pytree.KeyPath], module_name: str
) -> list[str]:
    """The graph's output names: the user's, or names built from where each tensor sits."""
    if given is not None:
        if isinstance(given, str):
            raise TypeError(f"output_names={given!r} is a string; expected a list of names")
        if len(given) != len(paths):
            raise ValueError(
                f"output_names={list(given)} has {len(given)} names, but {module_name} returns "
                f"{len(paths)} tensors; expected one name per output tensor"
            )
        return list(given)
    if not paths:
        raise ExportError(f"{module_name} returns no tensor; there is nothing to export")
    names = [_name_of(path) for path in paths]
    if len(set(names)) != len(names):
        names = [f"output_{index}" for index in range(len(paths))]
    return names


def _name_of(path: pytree.KeyPath) -> str:
    """``output`` for a lone tensor, ``output_1.0`` in nested sequences, ``logits`` for a dict."""
    if not path:
        return "output"
    parts = []
    for entry in path:
        for attribute in ("key", "idx", "name"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    joined = ".".join(parts)
    return f"output_{joined}" if isinstance(path[0], pytree.SequenceKey) else joined


@contextlib.contextmanager
def _inference(network: nn.Module) -> Iterator[None]:
    """Eval mode without gradients; every flag as it was afterwards, even after an error."""
    modes = [(submodule, submodule.training) for submodule in network.modules()]
    requires_grad = [(parameter, parameter.requires_grad) for parameter in network.parameters()]
    try:
        network.eval()
        with torch.no_grad():
            yield
    finally:
        network.train(modes[0][1])  # through the user's train() override, if any
        for submodule, mode in modes:
            submodule.training = mode
        for parameter, flag in requires_grad:
            if parameter.requires_grad != flag:
                parameter.requires_grad_(flag)


@contextlib.contextmanager
def _captured(log: io.StringIO) -> Iterator[None]:
    """Send what the exporter prints, logs and warns into ``log`` instead of the console."""
    with (
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),  # torch's log handler writes to the current sys.stderr
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                log.write(f"{warning.category.__name__}: {warning.message}\n")


def _export(
    network: nn.Module,
    args: tuple[Any, ...],
    destination: Path,
    module_name: str,
    *,
    dynamic_shapes: Any,
    input_names: Sequence[str] | None,
    output_names: Sequence[str],
    opset: int | None,
    metadata: Mapping[str, str],
) -> str:
    """Run ``torch.onnx.export(dynamo=True)``, save to ``destination`` with ``metadata``.

    Returns:
        what the exporter printed.
    """
    log = io.StringIO()
    try:
        with _captured(log):
            program = torch.onnx.export(
                network,
                args,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=list(input_names) if input_names is not None else None,
                output_names=list(output_names),
                opset_version=opset,
                verbose=False,
            )
            if program is None:  # only the legacy exporter returns None
                raise RuntimeError("torch.onnx.export returned no ONNX program")
            program.save(destination)
    except Exception as error:
        text = log.getvalue()
        logger.debug("torch.onnx.export output for %s:\n%s", module_name, text)
        raise ExportError(
            f"Could not export {module_name} to ONNX: {_describe(error)}", log=text
        ) from error
    text = log.getvalue()
    logger.debug("torch.onnx.export output for %s:\n%s", module_name, text)
    _write_metadata(destination, metadata)
    return text


def _describe(error: BaseException) -> str:
    """The exporter's headline and the root cause of ``error``, short and free of colour codes."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    root = chain[-1]
    cause = f"{type(root).__name__}: {_first_paragraph(root)}"
    for link in chain:  # torch.export quotes the user's line that failed; point at it
        found = _FAILING_CALL.search(_plain(str(link)))
        if found:
            cause += f" (at {found['where']}: {found['code'].strip()})"
            break
    if root is error:
        return cause
    headline = _plain(str(error)).strip().split("\n", 1)[0]
    headline = headline.split(" Next steps:", 1)[0].strip()
    return f"{headline} Cause: {cause}"


def _first_paragraph(error: BaseException) -> str:
    """The first paragraph of ``error``'s message, at most a few hundred characters."""
    text = _plain(str(error)).strip().split("\n\n", 1)[0].strip() or repr(error)
    if len(text) > _MAX_CAUSE_CHARS:
        text = text[: _MAX_CAUSE_CHARS - 3] + "..."
    return text


def _metadata_entries(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The exporter's version and the caller's ``metadata``, checked to be strings."""
    from helios.export import __version__

    given = dict(metadata or {})
    if not all(
        isinstance(key, str) and key and isinstance(value, str) for key, value in given.items()
    ):
        raise ValueError(f"metadata={metadata!r}: expected non-empty string keys and string values")
    return {"helios.export.version": __version__, **given}


def _write_metadata(staged: Path, entries: Mapping[str, str]) -> None:
    """Store ``entries`` in the staged file's ``metadata_props``, replacing equal keys.

    External data (a graph over 2 GiB) stays where it is: only the ``.onnx`` file is rewritten.
    """
    import onnx

    model = onnx.load(str(staged), load_external_data=False)
    kept = [prop for prop in model.metadata_props if prop.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(staged))


def _plain(text: str) -> str:
    """``text`` without terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class _Graph:
    """What the parity check needs to know of the exported graph."""

    def __init__(self, path: Path) -> None:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        self.input_names = tuple(value.name for value in model.graph.input)
        self.output_names = tuple(value.name for value in model.graph.output)
        self.dynamic_batch = tuple(
            bool(value.type.tensor_type.shape.dim)
            and bool(value.type.tensor_type.shape.dim[0].dim_param)
            for value in model.graph.input
        )
        self.opset = next(
            (entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0
        )


def _verify(
    network: nn.Module,
    args: tuple[Any, ...],
    staged: Path,
    graph: _Graph,
    *,
    example_batch: int,
    batch_sizes: Sequence[int] | None,
    batch_requested: bool,
    expected_outputs: int,
    rtol: float,
    atol: float,
    result: ParityResult,
) -> tuple[tuple[int, ...], str | None]:
    """Check ``staged`` with ``onnx.checker`` and onnxruntime; return the sizes and a failure.

    When a dynamic batch was asked for, the default sizes differ from the example's even if the
    graph came out with a fixed batch, so a batch the exporter silently fixed is a failure.
    """
    import onnx

    try:
        onnx.checker.check_model(str(staged))
    except onnx.checker.ValidationError as error:
        return (), f"onnx.checker rejected the file: {_first_paragraph(error)}"
    example_tensors = [leaf for leaf in pytree.tree_leaves(args) if isinstance(leaf, torch.Tensor)]
    if len(graph.input_names) != len(example_tensors) or (
        len(graph.output_names) != expected_outputs
    ):
        return (), (
            f"the graph has {len(graph.input_names)} inputs and {len(graph.output_names)} "
            f"outputs, but the module takes {len(example_tensors)} tensors and returns "
            f"{expected_outputs}"
        )
    dynamic = graph.dynamic_batch
    if batch_sizes is None:
        free = batch_requested or any(dynamic)
        batch_sizes = (1, example_batch + 5) if free else (example_batch,)
    sizes = tuple(dict.fromkeys(batch_sizes))
    if not any(dynamic) and set(sizes) != {example_batch}:
        return (), (
            f"verify_batch_sizes={sizes} needs a dynamic batch dimension, but every input of "
            f"the exported graph has a fixed dimension 0 ({example_batch})"
        )
    for size in sizes:
        inputs = make_inputs(args, size, dynamic)
        try:
            outputs = network(*inputs)
        except Exception as error:
            reason = f"PyTorch itself failed: {type(error).__name__}: {_first_paragraph(error)}"
            result.mismatches.append(Mismatch("(all)", size, reason))
            continue
        expected = [leaf for leaf in pytree.tree_leaves(outputs) if torch.is_tensor(leaf)]
        flat_inputs = [leaf for leaf in pytree.tree_leaves(inputs) if torch.is_tensor(leaf)]
        try:
            actual = run_onnxruntime(staged, flat_inputs)
        except Exception as error:
            reason = f"onnxruntime failed: {type(error).__name__}: {_first_paragraph(error)}"
            result.mismatches.append(Mismatch("(all)", size, reason))
            continue
        if len(actual) != len(expected):
            reason = f"onnxruntime returned {len(actual)} outputs, PyTorch {len(expected)}"
            result.mismatches.append(Mismatch("(all)", size, reason))
            continue
        compare_outputs(
            result,
            graph.output_names,
            expected,
            actual,
            batch_size=size,
            rtol=rtol,
            atol=atol,
        )
    if not result.mismatches:
        return sizes, None
    details = "; ".join(
        f"output {item.output!r} at batch size {item.batch_size}: {item.reason}"
        for item in result.mismatches
    )
    return sizes, f"onnxruntime does not reproduce PyTorch: {details}."


def _size_of(folder: Path) -> int:
    """Total size of the files in ``folder``."""
    return sum(entry.stat().st_size for entry in folder.iterdir() if entry.is_file())


def _publish(workdir: Path, target: Path) -> int:
    """Move the staged file (and any external-data file) into place; return the bytes moved.

    External data goes first so the ``.onnx`` file never points at a missing file; each file is
    flushed to disk before its rename, and the folder after, so a crash leaves either the old
    file or the new one.
    """
    staged = workdir / target.name
    extras = [entry for entry in workdir.iterdir() if entry.is_file() and entry != staged]
    total = 0
    for entry in [*extras, staged]:
        with entry.open("rb") as handle:
            os.fsync(handle.fileno())
        total += entry.stat().st_size
        os.replace(entry, target.parent / entry.name)
    with contextlib.suppress(OSError):  # not every platform can fsync a folder
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return total
