"""Plain weights files: Model.save_weights / load_weights, read by plain torch.load too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from helios.core import (
    WEIGHTS_FORMAT,
    ConfigurationError,
    Model,
    ResumeError,
    TrainingState,
    read_weights,
)


class EncoderDecoder(Model):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.width = width

    def setup(self) -> None:
        self.encoder = nn.Sequential(nn.Linear(6, self.width), nn.BatchNorm1d(self.width))
        self.decoder = nn.Linear(self.width, 6)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=1e-2)

    def train_step(self, batch: Any, state: TrainingState) -> torch.Tensor:
        return (self.decoder(self.encoder(batch)) - batch).pow(2).mean()


def trained(seed: int) -> EncoderDecoder:
    torch.manual_seed(seed)
    model = EncoderDecoder()
    model.setup()
    for _ in range(3):
        loss = model.train_step(torch.randn(8, 6), TrainingState())
        model.optimizer.zero_grad()
        loss.backward()
        model.optimizer.step()
    return model


def test_saved_weights_open_with_plain_torch_load_and_load_back_exactly(tmp_path: Path) -> None:
    model = trained(0)
    path = model.save_weights(tmp_path / "w" / "weights.pt", source={"step": "3"})

    plain = torch.load(path, weights_only=True)  # no Helios needed to read it
    assert plain["format"] == WEIGHTS_FORMAT
    assert sorted(plain["networks"]) == ["decoder", "encoder"]
    assert torch.equal(plain["networks"]["decoder"]["weight"], model.decoder.weight)
    # running statistics (buffers) travel too
    assert torch.equal(
        plain["networks"]["encoder"]["1.running_mean"], model.encoder[1].running_mean
    )

    fresh = trained(1)
    assert not torch.equal(fresh.decoder.weight, model.decoder.weight)
    source = fresh.load_weights(path)
    assert source == {"step": "3"}
    for name in ("encoder", "decoder"):
        mine, theirs = model.networks()[name].state_dict(), fresh.networks()[name].state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[key], theirs[key]) for key in mine)
    assert [p.name for p in tmp_path.joinpath("w").iterdir()] == ["weights.pt"]  # no temp left


def test_mismatched_networks_are_a_resume_error_naming_them(tmp_path: Path) -> None:
    path = trained(0).save_weights(tmp_path / "weights.pt")
    wider = EncoderDecoder(width=5)
    wider.setup()
    with pytest.raises(ResumeError, match=r"network 'decoder' does not fit its weights"):
        wider.load_weights(path)

    class EncoderOnly(EncoderDecoder):
        def setup(self) -> None:
            self.encoder = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4))

    partial = EncoderOnly()
    partial.setup()
    with pytest.raises(ResumeError, match=r"holds networks \['decoder', 'encoder'\] but"):
        partial.load_weights(path)
    partial.load_weights(path, strict=False)
    assert torch.equal(
        partial.encoder[0].weight, read_weights(path)["networks"]["encoder"]["0.weight"]
    )


def test_a_checkpoint_or_other_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    from helios.ckpt import DirectoryCheckpointStore

    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    info = store.save({"model": {"networks": {}}}, step=1, epoch=0)
    store.close()
    model = EncoderDecoder()
    model.setup()
    with pytest.raises(
        ConfigurationError, match=r"it is a Helios checkpoint: run `helios checkpoints extract"
    ):
        model.load_weights(info.path)

    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ConfigurationError, match=r"holds None, not a Helios weights file"):
        model.load_weights(other)
    with pytest.raises(ConfigurationError, match=r"path='.*missing.pt' does not exist"):
        model.load_weights(tmp_path / "missing.pt")
