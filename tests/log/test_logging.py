"""Rank-aware logging set-up (helios.log.setup_logging, teardown_logging, log_exception)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from helios.core import ConfigurationError
from helios.log import log_exception, setup_logging, teardown_logging


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    teardown_logging()


def test_setup_five_times_logs_each_message_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(5):
        logger = setup_logging(tmp_path)
    logger.info("one message")
    logging.getLogger("helios.trainer").warning("one warning from a child logger")

    text = (tmp_path / "rank-0.log").read_text(encoding="utf-8")
    assert text.count("one message") == 1
    assert text.count("one warning from a child logger") == 1
    console = capsys.readouterr().err
    assert console.count("one message") == 1
    assert console.count("one warning from a child logger") == 1
    assert len(logging.getLogger("helios").handlers) == 2  # one file, one console


def test_a_second_setup_moves_to_the_new_folder(tmp_path: Path) -> None:
    setup_logging(tmp_path / "first").info("to the first run")
    setup_logging(tmp_path / "second").info("to the second run")
    assert "to the second run" not in (tmp_path / "first" / "rank-0.log").read_text()
    assert "to the first run" not in (tmp_path / "second" / "rank-0.log").read_text()


def test_every_line_of_an_exception_carries_rank_and_node(tmp_path: Path) -> None:
    logger = setup_logging(tmp_path, rank=3, local_rank=1, node_rank=1, world_size=4)

    def fail() -> None:
        raise RuntimeError("loss is nan")

    try:
        fail()
    except RuntimeError as error:
        log_exception(logger, error)
        log_exception(logger, error)  # an outer handler: not logged a second time

    lines = (tmp_path / "rank-3.log").read_text(encoding="utf-8").splitlines()
    assert lines
    assert all(line.startswith("[rank 3/4 node 1 local 1] ") for line in lines)
    text = "\n".join(lines)
    assert text.count("RuntimeError raised") == 1
    assert "Traceback (most recent call last):" in text
    assert "in fail" in text
    assert "RuntimeError: loss is nan" in text


def test_other_ranks_write_only_problems_to_their_file_and_nothing_to_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = setup_logging(tmp_path, rank=1, world_size=2)
    logger.info("progress that only rank 0 reports")
    logger.warning("disk almost full")
    text = (tmp_path / "rank-1.log").read_text(encoding="utf-8")
    assert "progress that only rank 0 reports" not in text
    assert "disk almost full" in text
    assert capsys.readouterr().err == ""


def test_no_file_on_another_rank_until_something_goes_wrong(tmp_path: Path) -> None:
    setup_logging(tmp_path, rank=1, world_size=2).info("nothing to see")
    assert not (tmp_path / "rank-1.log").exists()


def test_python_warnings_are_captured_into_the_file(tmp_path: Path) -> None:
    setup_logging(tmp_path, rank=1, world_size=2, capture_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a deprecated argument", DeprecationWarning, stacklevel=1)
    text = (tmp_path / "rank-1.log").read_text(encoding="utf-8")
    assert "DeprecationWarning: a deprecated argument" in text
    assert text.startswith("[rank 1/2 node 0 local 0] ")


def test_console_can_be_turned_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(tmp_path, console=False).info("file only")
    assert capsys.readouterr().err == ""
    assert "file only" in (tmp_path / "rank-0.log").read_text(encoding="utf-8")


def test_teardown_restores_what_was_there(tmp_path: Path) -> None:
    helios_logger = logging.getLogger("helios")
    level, propagate = helios_logger.level, helios_logger.propagate
    handlers = list(helios_logger.handlers)
    setup_logging(tmp_path, level=logging.DEBUG)
    teardown_logging()
    teardown_logging()  # idempotent
    helios_logger.warning("after teardown")
    assert "after teardown" not in (tmp_path / "rank-0.log").read_text(encoding="utf-8")
    assert helios_logger.handlers == handlers
    assert (helios_logger.level, helios_logger.propagate) == (level, propagate)
    assert logging.getLogger("py.warnings").handlers == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"rank": -1}, "rank must be an int >= 0, got -1"),
        ({"rank": 2, "world_size": 2}, "rank must be smaller than world_size=2, got 2"),
        ({"world_size": 0}, "world_size must be an int >= 1, got 0"),
        ({"node_rank": "a"}, "node_rank must be an int >= 0, got 'a'"),
        ({"level": "INFO"}, "level must be a logging level"),
    ],
)
def test_bad_arguments_are_configuration_errors(
    tmp_path: Path, arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        setup_logging(tmp_path, **arguments)  # type: ignore[arg-type]


def test_the_console_shows_an_exception_in_one_line_and_the_file_keeps_its_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = setup_logging(tmp_path)
    try:
        raise ValueError("bad batch")
    except ValueError as error:
        log_exception(logger, error, message="training failed")
    console = capsys.readouterr().err
    assert "Traceback" not in console
    assert f"training failed: ValueError: bad batch (traceback in {tmp_path / 'rank-0.log'})" in (
        console
    )
    assert "Traceback (most recent call last):" in (tmp_path / "rank-0.log").read_text()
