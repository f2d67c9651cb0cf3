"""``helios checkpoints``: the best checkpoint and its metric; ``extract`` to a weights file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_folder_jobs import BlobsWithValidation, Validated

from helios.ckpt import DirectoryCheckpointStore
from helios.trainer import Trainer
from helios.trainer._cli import main


class Accuracy(Validated):
    monitor = "accuracy"
    monitor_mode = "max"

    def valid_step(self, batch: object, step: int) -> dict[str, torch.Tensor]:
        x, y = batch  # type: ignore[misc]
        hits = (self.net(x).argmax(dim=1) == y).float().mean()
        return {"accuracy": hits, "loss": torch.nn.functional.cross_entropy(self.net(x), y)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-weights")
    Trainer(
        folder,
        unit="iteration",
        total=8,
        valid_every=2,
        checkpoint_every=2,
        keep_checkpoints=None,
        progress=False,
        tensorboard=False,
        devices="cpu",
    ).fit(Accuracy(), BlobsWithValidation())
    return folder


def test_checkpoints_marks_the_best_by_the_monitored_metric(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DirectoryCheckpointStore(
        run_dir / "checkpoints", keep_last=None, best_metric="accuracy", best_mode="max"
    )
    best = store.best()
    store.close()
    assert best is not None

    assert main(["checkpoints", str(run_dir)]) == 0
    out = capsys.readouterr().out
    marked = [line for line in out.splitlines() if " best " in line]
    assert len(marked) == 1 and best.path.name in marked[0], out
    value = best.metrics["accuracy"]
    assert f"best by accuracy (max): {best.path.name} (accuracy={value:.6g})" in out


def test_extract_writes_weights_plain_torch_load_opens_and_load_weights_restores(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    out = tmp_path / "weights.pt"

    assert main(["checkpoints", "extract", str(checkpoint), "-o", str(out)]) == 0
    assert f"of {checkpoint.name} (step 8) to {out}" in capsys.readouterr().out

    plain = torch.load(out, weights_only=True)  # no Helios involved
    assert plain["source"]["helios.checkpoint.step"] == "8"
    store = DirectoryCheckpointStore(run_dir / "checkpoints", keep_last=None)
    listed = {info.path.name: info for info in store.list()}
    saved = store.load(checkpoint)
    store.close()
    assert plain["source"]["helios.checkpoint.sha256"] == listed[checkpoint.name].sha256
    expected = saved["model"]["networks"]["net"]
    assert plain["networks"]["net"].keys() == expected.keys()
    assert all(torch.equal(plain["networks"]["net"][k], expected[k]) for k in expected)

    model = Accuracy()
    model.setup()
    source = model.load_weights(out)
    assert source["helios.checkpoint"] == checkpoint.name
    state = model.net.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_extract_of_a_missing_or_damaged_checkpoint_is_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "step-00000099.pt"
    assert main(["checkpoints", "extract", str(missing), "-o", str(tmp_path / "w.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err

    damaged = tmp_path / "checkpoints" / "step-00000002.pt"
    damaged.parent.mkdir()
    data = bytearray((run_dir / "checkpoints" / damaged.name).read_bytes())
    data[-50] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert main(["checkpoints", "extract", str(damaged), "-o", str(tmp_path / "w.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("helios checkpoints extract: error: ") and err.count("\n") == 1
    assert not (tmp_path / "w.pt").exists()
