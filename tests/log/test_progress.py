"""Progress bars (helios.log.ProgressBar) and their separation from log files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helios.core import ConfigurationError
from helios.log import ProgressBar, setup_logging, teardown_logging


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    teardown_logging()


def test_off_by_default_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(total=10, desc="train") as bar:
        for _ in range(10):
            bar.update()
    assert not bar.enabled
    assert bar.n == 10
    assert capsys.readouterr().err == ""


def test_asked_for_it_draws_on_stderr_from_the_resumed_position(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with ProgressBar(total=80, initial=40, desc="train", unit="step", enabled=True) as bar:
        first = capsys.readouterr().err
        for _ in range(40):
            bar.update()
        bar.set_postfix({"loss": 0.125})
    last = capsys.readouterr()
    assert "train" in first
    assert "40/80" in first
    assert "80/80" in last.err
    assert "loss=0.125" in last.err
    assert last.out == ""  # bars never touch stdout


def test_bars_never_reach_the_log_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logger = setup_logging(tmp_path)
    with ProgressBar(total=20, desc="valid", enabled=True) as bar:
        for index in range(20):
            bar.update()
            if index % 5 == 0:
                logger.info("batch %d done", index)
    console = capsys.readouterr().err
    assert "\r" in console  # the bar did run on the terminal...
    assert "batch 15 done" in console

    text = (tmp_path / "rank-0.log").read_bytes().decode("utf-8")
    assert "batch 15 done" in text
    for garbage in ("\r", "it/s", "20/20", "█", "valid:"):  # ...and left nothing in the file
        assert garbage not in text
    assert len(text.splitlines()) == 4


@pytest.mark.parametrize(
    ("total", "initial", "message"),
    [(-1, 0, "total must be an int >= 0 or None"), (10, 11, "initial must be between 0")],
)
def test_impossible_positions_are_configuration_errors(
    total: int, initial: int, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ProgressBar(total=total, initial=initial, enabled=False)
