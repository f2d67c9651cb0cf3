"""Asynchronous saves: a CPU snapshot written in the background, errors never lost."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from state_checks import assert_nested_equal

from helios.ckpt import CheckpointError, DirectoryCheckpointStore, _format

from .conftest import make_state


def test_the_saved_state_is_the_one_at_save_time(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, async_save=True)
    state = make_state(1)
    expected = make_state(1)
    shared = state["model"]["weight"]
    state["tied"] = {"weight": shared}  # the same tensor twice stays one tensor
    expected["tied"] = {"weight": expected["model"]["weight"]}
    info = store.save(state, step=1, epoch=0, metrics={"loss": 1.5})
    shared.add_(100.0)  # training goes on and changes its tensors in place
    state["trainer"]["step"] = 2
    assert (info.path, info.step, info.size, info.sha256) == (
        tmp_path / "step-00000001.pt",
        1,
        0,
        "",
    )
    store.wait()
    loaded = store.load()
    assert_nested_equal(loaded, expected)
    assert loaded["tied"]["weight"] is loaded["model"]["weight"]
    latest = store.latest()
    assert latest is not None
    assert latest.size > 0
    assert latest.metrics == {"loss": 1.5}
    store.close()


class Gate:
    """Holds every background write until opened, to observe what waits for what."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        real = _format.write_checkpoint

        def gated(*args: Any, **kwargs: Any) -> tuple[int, str]:
            self.entered.set()
            assert self.open.wait(60)
            return real(*args, **kwargs)

        monkeypatch.setattr(_format, "write_checkpoint", gated)


def test_a_second_save_waits_for_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(monkeypatch)
    store = DirectoryCheckpointStore(tmp_path, keep_last=None, async_save=True)
    store.save(make_state(1), step=1, epoch=0)
    assert gate.entered.wait(60)
    second_done = threading.Event()

    def second() -> None:
        store.save(make_state(2), step=2, epoch=0)
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not second_done.wait(0.3)  # blocked behind the first save
    assert store.list() == []  # and the first is not durable yet
    gate.open.set()
    thread.join(60)
    assert second_done.is_set()
    store.close()  # waits for the second
    assert [info.step for info in store.list()] == [1, 2]


def fail_step(monkeypatch: pytest.MonkeyPatch, bad_step: int) -> None:
    real = _format.write_checkpoint

    def failing(*args: Any, **kwargs: Any) -> tuple[int, str]:
        if kwargs["step"] == bad_step:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(_format, "write_checkpoint", failing)


def test_a_background_error_surfaces_at_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fail_step(monkeypatch, 2)
    store = DirectoryCheckpointStore(tmp_path, keep_last=None, async_save=True)
    store.save(make_state(1), step=1, epoch=0)
    with caplog.at_level(logging.ERROR, logger="helios.ckpt"):
        store.save(make_state(2), step=2, epoch=0)  # fails in the background
        with pytest.raises(CheckpointError, match=r"background save of step 2.*No space left"):
            store.save(make_state(3), step=3, epoch=0)
    assert "background save of step 2" in caplog.text  # logged when it happened, too
    # reported once; the store goes on working
    store.save(make_state(3), step=3, epoch=0)
    store.close()
    assert [info.step for info in store.list()] == [1, 3]
    assert_nested_equal(store.load(), make_state(3))


def test_a_background_error_surfaces_at_wait_and_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_step(monkeypatch, 1)
    store = DirectoryCheckpointStore(tmp_path, async_save=True)
    store.save(make_state(1), step=1, epoch=0)
    with pytest.raises(CheckpointError, match="background save of step 1"):
        store.wait()
    store.save(make_state(1), step=1, epoch=0)
    with pytest.raises(CheckpointError, match="background save of step 1"):
        store.close()
    with pytest.raises(CheckpointError, match="is closed"):
        store.save(make_state(2), step=2, epoch=0)


def test_tensors_off_the_cpu_are_copied_to_it(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, async_save=True)
    state = {"model": {"w": torch.arange(4.0)}}
    store.save(state, step=1, epoch=0)
    store.close()
    assert store.load(map_location="cpu")["model"]["w"].device.type == "cpu"


def test_consecutive_async_saves_each_hold_their_own_values(tmp_path: Path) -> None:
    # the CPU copies are reused from one save to the next: no checkpoint may see another's data
    store = DirectoryCheckpointStore(tmp_path, keep_last=None, async_save=True)
    weight = torch.zeros(1000)
    grown = torch.zeros(3)
    expected = {}
    for step in range(1, 5):
        weight.fill_(float(step))
        if step == 3:
            grown = torch.zeros(5)  # a shape change mid-run gets a fresh buffer
        grown.fill_(-float(step))
        state = {"model": {"w": weight, "g": grown}, "step": step}
        expected[step] = {"model": {"w": weight.clone(), "g": grown.clone()}, "step": step}
        store.save(state, step=step, epoch=0)
    store.close()
    for step, state in expected.items():
        assert_nested_equal(store.load(f"step-{step:08d}.pt"), state)
