"""Retention keeps exactly what it promises: the last N by step and the best K by a metric."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Literal

import pytest

from helios.ckpt import CheckpointWarning, DirectoryCheckpointStore

from .conftest import make_state


def expected_kept(
    saved: dict[int, float | None], keep_last: int, keep_best: int, mode: str
) -> set[int]:
    """The rule, written independently: last ``keep_last`` steps, best ``keep_best`` values."""
    steps = sorted(saved)
    kept = set(steps[-keep_last:])
    ranked = [s for s in steps if saved[s] is not None and not math.isnan(saved[s])]  # type: ignore[arg-type]
    sign = 1 if mode == "min" else -1
    ranked.sort(key=lambda s: (sign * saved[s], s))  # type: ignore[operator]  # older wins a tie
    return kept | set(ranked[:keep_best])


def on_disk(directory: Path) -> set[int]:
    names = os.listdir(directory)
    assert all(name.startswith("step-") and name.endswith(".pt") for name in names), names
    return {int(name[5:13]) for name in names}


@pytest.mark.parametrize("mode", ["min", "max"])
def test_fifty_saves_with_varying_metrics_keep_exactly_the_promised_set(
    tmp_path: Path, mode: Literal["min", "max"]
) -> None:
    rng = random.Random(f"retention-{mode}")
    store = DirectoryCheckpointStore(
        tmp_path, keep_last=3, keep_best=2, best_metric="valid/loss", best_mode=mode
    )
    saved: dict[int, float | None] = {}
    for index in range(50):
        step = 10 * (index + 1)
        roll = rng.random()
        if roll < 0.1:
            value: float | None = None  # a save without validation
        elif roll < 0.15:
            value = math.nan  # a diverged validation is never "best"
        elif roll < 0.35 and saved:
            value = rng.choice([v for v in saved.values() if v is not None] or [1.0])  # ties
        else:
            value = round(rng.uniform(0, 10), 1)
        metrics = {"train/loss": rng.random()}
        if value is not None:
            metrics["valid/loss"] = value
        store.save(make_state(step, numel=4), step=step, epoch=index // 5, metrics=metrics)
        saved[step] = value
        assert on_disk(tmp_path) == expected_kept(saved, 3, 2, mode), f"after step {step}"

        best = store.best()
        ranked = sorted(
            (s for s, v in saved.items() if v is not None and not math.isnan(v)),
            key=lambda s: ((1 if mode == "min" else -1) * saved[s], s),  # type: ignore[operator]
        )
        assert (best.step if best else None) == (ranked[0] if ranked else None)
    assert [info.step for info in store.list()] == sorted(expected_kept(saved, 3, 2, mode))


def test_keep_last_only_and_keep_all(tmp_path: Path) -> None:
    last_two = DirectoryCheckpointStore(tmp_path / "two", keep_last=2)
    everything = DirectoryCheckpointStore(tmp_path / "all", keep_last=None)
    for step in range(1, 8):
        last_two.save(make_state(step, numel=4), step=step, epoch=0, metrics={"loss": -step})
        everything.save(make_state(step, numel=4), step=step, epoch=0)
    assert on_disk(tmp_path / "two") == {6, 7}
    assert on_disk(tmp_path / "all") == set(range(1, 8))
    assert last_two.best() is None  # no best_metric


def test_the_new_checkpoint_is_kept_even_when_it_is_not_the_newest(tmp_path: Path) -> None:
    # saving an older step (a rewind) must not delete the checkpoint just written
    store = DirectoryCheckpointStore(tmp_path, keep_last=1)
    store.save(make_state(20, numel=4), step=20, epoch=0)
    store.save(make_state(10, numel=4), step=10, epoch=0)
    assert on_disk(tmp_path) == {10, 20}
    store.save(make_state(30, numel=4), step=30, epoch=0)
    assert on_disk(tmp_path) == {30}


def test_damaged_files_are_neither_counted_nor_deleted(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=1)
    store.save(make_state(1, numel=4), step=1, epoch=0)
    (tmp_path / "step-00000001.pt").write_bytes(b"")  # damaged: left for a human to look at
    store.save(make_state(2, numel=4), step=2, epoch=0)
    assert on_disk(tmp_path) == {1, 2}
    with pytest.warns(CheckpointWarning, match="is empty"):
        assert [info.step for info in store.list()] == [2]


def test_leftovers_of_killed_saves_are_removed_by_the_next_save(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    leftover = tmp_path / ".step-00000007.pt.0123abcd.tmp"
    leftover.write_bytes(b"half a checkpoint")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("mine")
    assert [info.step for info in store.list()] == []
    store.save(make_state(8, numel=4), step=8, epoch=0)
    assert not leftover.exists()
    assert unrelated.exists()


def test_fewer_checkpoints_than_keep_last_are_all_kept(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep_last=3)
    store.save(make_state(1, numel=4), step=1, epoch=0)
    store.save(make_state(2, numel=4), step=2, epoch=0)
    assert on_disk(tmp_path) == {1, 2}
    store.save(make_state(3, numel=4), step=3, epoch=0)
    store.save(make_state(4, numel=4), step=4, epoch=0)
    assert on_disk(tmp_path) == {2, 3, 4}
