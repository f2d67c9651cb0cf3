"""``Trainer(compile=...)`` in one process: plain checkpoint keys, resume across, no graph breaks.

Also ``helios.core.unwrap`` (DDP, compile, FSDP2), here because its cases import dynamo, which
this module pays for anyway.

Compiled runs use cheap backends: ``"aot_eager"`` (dynamo's capture and AOTAutograd, the path
inductor builds on, without its C++ code generation: minutes on two shared cores) where the
numbers matter, and a counting backend where only the graphs do. Which backend turns a graph
into code changes neither the keys of a checkpoint nor where dynamo breaks or recompiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from resume_checks import final_checkpoint
from torch import nn
from torch._dynamo.utils import counters
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel
from toy_training import ToyData, ToyModel

from helios.core import ConfigurationError, ExportTarget, Model, TrainingState, unwrap
from helios.dist import free_port
from helios.trainer import Callback, FitResult, Trainer

SETTINGS: dict[str, Any] = {
    # 96 points in batches of 8: 12 steps, one epoch; validation at its end
    "unit": "iteration",
    "total": 12,
    "checkpoint_every": 4,
    "log_every": 1,
    "seed": 3,
    "progress": False,
    "tensorboard": False,
}
AOT = {"backend": "aot_eager"}


class CountingBackend:
    """A ``torch.compile`` backend that runs each graph as captured and counts the graphs."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: Any) -> Any:
        self.graphs += 1
        return graph.forward


def graph_breaks() -> dict[str, int]:
    return dict(counters["graph_break"])


class Recorder(Callback):
    """Records, after every batch, the graphs compiled so far and the graph breaks."""

    def __init__(self, backend: CountingBackend) -> None:
        self.backend = backend
        self.graphs: list[int] = []
        self.breaks: list[int] = []
        self.compiled: list[list[str]] = []

    def on_training_batch_end(self, state: Any, model: Model) -> None:
        self.graphs.append(self.backend.graphs)
        self.breaks.append(sum(graph_breaks().values()))
        self.compiled.append(
            [
                name
                for name, module in unwrap(model.net).named_modules()  # type: ignore[attr-defined]
                if module._compiled_call_impl is not None
            ]
        )


def fit(run_dir: Path, model: Model | None = None, **settings: Any) -> FitResult:
    torch._dynamo.reset()
    counters.clear()
    trainer = Trainer(run_dir, **{**SETTINGS, "exit_on_signal": False, **settings})
    return trainer.fit(model or ToyModel(), ToyData())


@pytest.fixture(autouse=True)
def fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One eager and one compiled run of the same job, shared by the tests."""
    eager, compiled = tmp_path_factory.mktemp("eager"), tmp_path_factory.mktemp("compiled")
    fit(eager)
    fit(compiled, compile=AOT)
    assert counters["stats"]["unique_graphs"] > 0  # it did compile
    return {"eager": eager, "compiled": compiled}


@pytest.mark.slow  # the shared runs are trained in its set-up (dynamo's import included)
def test_compiled_checkpoints_have_the_keys_of_uncompiled_ones(runs: dict[str, Path]) -> None:
    eager = final_checkpoint(runs["eager"])["model"]["networks"]
    compiled = final_checkpoint(runs["compiled"])["model"]["networks"]
    assert compiled.keys() == eager.keys() == {"net"}
    plain = ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert list(compiled["net"]) == list(eager["net"]) == plain


class CompiledInSetup(ToyModel):
    """What a user does by hand: ``torch.compile`` in ``setup`` (an ``OptimizedModule``)."""

    def setup(self) -> None:
        super().setup()
        self.net = torch.compile(self.net, backend="eager")  # type: ignore[assignment]

    def export_target(self) -> ExportTarget:
        return ExportTarget(self.net, (torch.randn(4, 6),))


def test_a_network_compiled_by_hand_is_saved_without_the_wrapper(tmp_path: Path) -> None:
    model = CompiledInSetup()
    ours = CountingBackend()
    fit(tmp_path, model, total=2, compile={"backend": ours})
    assert counters["stats"]["unique_graphs"] > 0  # compiled by the user's torch.compile ...
    assert ours.graphs == 0  # ... and not compiled again by the trainer
    assert type(model.net).__name__ == "OptimizedModule"  # the user's own wrapper stays
    saved = final_checkpoint(tmp_path)["model"]["networks"]["net"]
    assert not [key for key in saved if "_orig_mod" in key]
    plain = ToyModel()
    plain.setup()
    plain.net.load_state_dict(saved)  # strict: the keys of the plain network


@pytest.mark.parametrize(("first", "then"), [(False, AOT), (AOT, False)])
def test_a_run_resumes_across_compiled_and_uncompiled(
    tmp_path: Path, first: Any, then: Any
) -> None:
    stopped = fit(tmp_path, ToyModel(sigterm_at=5), compile=first)
    assert stopped.interrupted
    assert stopped.state.step == 5
    resumed = fit(tmp_path, compile=then)
    assert resumed.complete
    assert resumed.resumed_from is not None
    assert resumed.resumed_from.name == stopped.checkpoint.name  # type: ignore[union-attr]
    assert resumed.steps_trained == 7
    # testing reads the checkpoint into a plain network, whichever run wrote it
    metrics = Trainer(tmp_path, **SETTINGS).test(ToyModel(), ToyData(), checkpoint="last")
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_export_and_test_read_compiled_checkpoints(runs: dict[str, Path], tmp_path: Path) -> None:
    trainer = Trainer(runs["compiled"], **SETTINGS)
    report = trainer.export(CompiledInSetup(), "last", tmp_path / "net.onnx")
    assert (tmp_path / "net.onnx").is_file()
    assert report.max_abs_error is not None
    assert report.max_abs_error <= 1e-4
    metrics = trainer.test(CompiledInSetup(), ToyData(), checkpoint="last")
    assert metrics == Trainer(runs["compiled"], **SETTINGS).test(ToyModel(), ToyData(), "last")


def test_the_trainer_breaks_no_graph_and_does_not_recompile(tmp_path: Path) -> None:
    """Autocast, accumulation, clipping and the metric sums stay outside the compiled graph."""
    work = {"precision": "bf16", "accumulate": 2, "clip_grad_norm": 1.0, "total": 6}
    backend = CountingBackend()
    fresh = Recorder(backend)
    fit(tmp_path / "fresh", compile={"backend": backend}, callbacks=[fresh], **work)
    assert graph_breaks() == {}
    assert fresh.graphs == [1] * 12  # one graph, compiled by the first batch, then reused
    fresh_total = backend.graphs  # validation (eval mode, no grad) adds its own graph

    backend = CountingBackend()
    fit(tmp_path / "resumed", ToyModel(sigterm_at=3), compile={"backend": backend}, **work)
    backend = CountingBackend()
    resumed = Recorder(backend)
    result = fit(tmp_path / "resumed", compile={"backend": backend}, callbacks=[resumed], **work)
    assert result.resumed_from is not None
    assert graph_breaks() == {}
    assert resumed.graphs == [1] * 6
    assert backend.graphs <= fresh_total


class PrintingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("forward of a batch of", x.shape[0])  # a graph break: dynamo cannot trace print
        return self.layer(x)


class PrintingModel(ToyModel):
    def setup(self) -> None:
        self.net = PrintingNet()
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)


def test_the_counter_sees_a_graph_break_in_user_code(tmp_path: Path) -> None:
    """The control: the same count is not zero when the user's ``forward`` breaks the graph."""
    fit(tmp_path, PrintingModel(), compile={"backend": CountingBackend()}, total=2)
    breaks = graph_breaks()
    assert sum(breaks.values()) >= 2
    assert all("print" in reason for reason in breaks)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.blocks = nn.ModuleList(Block(16) for _ in range(3))
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)  # type: ignore[no-any-return]


class BlockModel(ToyModel):
    compile_modules = (Block,)

    def setup(self) -> None:
        self.net = Stack()
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=3e-3)

    def on_training_batch_end(self, state: TrainingState) -> None:
        pass


@pytest.mark.parametrize("regional", [None, False])
def test_regional_compile_compiles_the_named_blocks(tmp_path: Path, regional: bool | None) -> None:
    backend = CountingBackend()
    recorder = Recorder(backend)
    model = BlockModel()
    setting = {"backend": backend, "regional": regional}
    fit(tmp_path, model, compile=setting, callbacks=[recorder], total=3)
    blocks = ["blocks.0", "blocks.1", "blocks.2"]
    assert recorder.compiled == [blocks if regional is None else [""]] * 3
    # three blocks alike: one graph, reused (a whole network is one graph as well)
    assert recorder.graphs == [1] * 3
    assert graph_breaks() == {}
    # after fit the model has its eager networks back, with plain keys in the checkpoint
    assert all(module._compiled_call_impl is None for module in model.net.modules())
    saved = final_checkpoint(tmp_path)["model"]["networks"]["net"]
    assert saved.keys() == Stack().state_dict().keys()


@pytest.fixture
def group_of_one() -> Iterator[None]:
    """A real one-process Gloo group, as DDP needs."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_unwrap_removes_compile_and_ddp_in_any_nesting(group_of_one: None) -> None:
    net = ToyModel()
    net.setup()
    plain = list(net.net.state_dict())
    compiled = torch.compile(net.net)  # lazy: nothing compiles until it is called
    assert list(compiled.state_dict()) == [f"_orig_mod.{key}" for key in plain]
    for wrapped in (
        compiled,
        DistributedDataParallel(compiled),
        torch.compile(DistributedDataParallel(net.net)),
    ):
        assert unwrap(wrapped) is net.net
        assert list(unwrap(wrapped).state_dict()) == plain
    net.net.compile()  # in place: nothing to remove
    assert unwrap(net.net) is net.net


def test_unwrap_leaves_an_fsdp2_network_as_it_is(group_of_one: None) -> None:
    net = ToyModel()
    net.setup()
    plain = list(net.net.state_dict())
    sharded = fully_shard(net.net)  # the class changes in place; the keys stay
    assert unwrap(sharded) is sharded
    assert list(sharded.state_dict()) == plain


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "compile must be True, False or a dict"),
        ({"mod": "default"}, r"unknown option\(s\) \['mod'\]"),
        ({"mode": "fastest"}, r"compile\['mode'\] must be one of"),
        ({"fullgraph": 1}, r"compile\['fullgraph'\] must be True or False, got 1"),
        ({"dynamic": 1}, r"compile\['dynamic'\] must be True, False or None, got 1"),
        ({"backend": 3}, r"compile\['backend'\] must be the name"),
        ({"mode": "max-autotune", "options": {}}, "conflict"),
    ],
)
def test_bad_compile_settings_are_refused(tmp_path: Path, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Trainer(tmp_path, total=1, compile=value)
