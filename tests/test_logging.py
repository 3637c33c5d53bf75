"""The logs plugin with real files: text and JSON lines, reopen on graceful, restore."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Child
from sitebus import Bus
from sitebus.errors import ConfigError
from sitebus.plugins.logs import JsonFormatter, Logs, LogsOptions

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+): (.*)$")


@pytest.fixture
def logs(bus: Bus) -> Iterator[Callable[..., Logs]]:
    """``logs(**options)`` subscribes a Logs plugin; every one is unsubscribed afterwards."""
    made: list[Logs] = []

    def make(**options: Any) -> Logs:
        plugin = Logs(bus, LogsOptions(**options))
        plugin.subscribe()
        made.append(plugin)
        return plugin

    yield make
    for plugin in reversed(made):
        plugin.unsubscribe()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def raised() -> ValueError:
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        return exc


def test_text_lines_go_to_the_file(bus: Bus, logs: Callable[..., Logs], tmp_path: Path) -> None:
    path = tmp_path / "site.log"
    logs(file=path)
    bus.log("hello")
    bus.log("hidden", logging.DEBUG)
    (line,) = lines(path)
    match = TEXT_LINE.match(line)
    assert match is not None, line
    assert match.groups() == ("INFO", "sitebus", "hello")


def test_json_lines_parse_including_one_with_an_exception(
    bus: Bus, logs: Callable[..., Logs], tmp_path: Path
) -> None:
    path = tmp_path / "site.jsonl"
    logs(file=path, format="json", level="DEBUG")
    bus.log('quote " and\nnewline é')
    bus.log("failed", logging.ERROR, raised())
    first, second = (json.loads(line) for line in lines(path))
    assert first["message"] == 'quote " and\nnewline é'
    assert (first["level"], first["logger"]) == ("INFO", "sitebus")
    assert "exception" not in first
    assert second["level"] == "ERROR"
    assert second["exception"].startswith("Traceback (most recent call last):")
    assert second["exception"].endswith("ValueError: bad input")
    assert "in raised" in second["exception"]
    stamp = datetime.fromisoformat(second["timestamp"])
    assert second["timestamp"].endswith("Z")
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(hours=1)


def test_the_file_is_appended_to(bus: Bus, logs: Callable[..., Logs], tmp_path: Path) -> None:
    path = tmp_path / "site.log"
    path.write_text("earlier\n")
    logs(file=path)
    bus.log("later")
    assert lines(path)[0] == "earlier"
    assert lines(path)[1].endswith("sitebus: later")


def test_graceful_reopens_the_file_after_logrotate_moved_it(
    bus: Bus, logs: Callable[..., Logs], tmp_path: Path
) -> None:
    path = tmp_path / "site.log"
    logs(file=path)
    bus.subscribe("graceful", lambda: bus.log("reloading config"))
    bus.start()
    bus.log("before rotation")
    rotated = tmp_path / "site.log.1"
    path.rename(rotated)
    bus.log("still to the open file")
    bus.graceful()
    bus.log("after rotation")
    bus.stop()
    old, new = "\n".join(lines(rotated)), "\n".join(lines(path))
    assert "Bus starting" in old and "before rotation" in old and "still to the open" in old
    assert "after rotation" not in old
    assert "after rotation" in new and "Bus stopped" in new
    assert "reloading config" in new, "the file is reopened before other graceful listeners"


def test_failed_reopen_is_logged_and_the_old_file_kept(
    bus: Bus, logs: Callable[..., Logs], tmp_path: Path
) -> None:
    path = tmp_path / "site.log"
    logs(file=path)
    bus.start()
    path.rename(tmp_path / "site.log.1")
    path.mkdir()  # the path can no longer be opened as a file
    bus.graceful()
    bus.log("after")
    bus.stop()
    text = (tmp_path / "site.log.1").read_text()
    assert f"Could not reopen log file {path}: IsADirectoryError" in text
    assert "after" in text


def test_unsubscribe_restores_the_logger_as_it_was(bus: Bus, tmp_path: Path) -> None:
    logger = logging.getLogger("sitebus")
    previous = logging.NullHandler()
    logger.addHandler(previous)
    logger.setLevel(logging.WARNING)
    try:
        plugin = Logs(bus, LogsOptions(file=tmp_path / "site.log", level="DEBUG"))
        plugin.subscribe()
        assert previous not in logger.handlers and len(logger.handlers) == 1
        assert (logger.level, logger.propagate) == (logging.DEBUG, False)
        plugin.unsubscribe()
        assert logger.handlers == [previous]
        assert (logger.level, logger.propagate) == (logging.WARNING, True)
    finally:
        logger.removeHandler(previous)
        logger.setLevel(logging.NOTSET)


def test_a_bus_without_logger_is_written_through_the_log_channel(tmp_path: Path) -> None:
    bus = Bus(listener_timeout=5.0, logger=None)
    path = tmp_path / "site.log"
    plugin = Logs(bus, LogsOptions(file=path, format="json"))
    plugin.subscribe()
    try:
        bus.log("through the channel", logging.WARNING, raised())
    finally:
        plugin.unsubscribe()
    (entry,) = (json.loads(line) for line in lines(path))
    assert entry["message"] == "through the channel"
    assert entry["exception"].endswith("ValueError: bad input")


def test_each_line_is_written_once_for_the_bus_and_for_another_logger(
    bus: Bus, logs: Callable[..., Logs], tmp_path: Path
) -> None:
    """To the bus's own logger records arrive directly; to another, via the channel."""
    own, other = tmp_path / "own.log", tmp_path / "other.log"
    logs(file=own)
    logs(file=other, logger="sitebus-test-app")
    bus.log("once")
    logging.getLogger("sitebus-test-app").warning("app line")
    assert [line.split(": ", 1)[1] for line in lines(own)] == ["once"]
    assert [line.split(": ", 1)[1] for line in lines(other)] == ["once", "app line"]


def test_given_handlers_get_the_format_while_subscribed(
    bus: Bus, logs: Callable[..., Logs]
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    plugin = logs(handlers=[handler], format="json")
    bus.log("to the handler")
    assert json.loads(stream.getvalue())["message"] == "to the handler"
    plugin.unsubscribe()
    assert handler.formatter is None


def test_standard_error_is_the_default(
    bus: Bus, logs: Callable[..., Logs], capsys: pytest.CaptureFixture[str]
) -> None:
    logs(level=logging.WARNING)
    bus.log("quiet")
    bus.log("loud", logging.WARNING)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].endswith("WARNING sitebus: loud")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "xml"}, "log format 'xml' is not one of text, json"),
        ({"level": "LOUD"}, "log level 'LOUD' is not one of DEBUG, INFO, WARNING"),
        ({"level": -1}, "log level -1 is not one of"),
        ({"text_format": "%(oops"}, "text_format '%\\(oops' is not a logging format string"),
    ],
)
def test_bad_options_are_clear_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LogsOptions(**options)


def test_unopenable_file_is_a_clear_error_and_leaves_the_logger_alone(
    bus: Bus, tmp_path: Path
) -> None:
    logger = logging.getLogger("sitebus")
    before = (list(logger.handlers), logger.level, logger.propagate)
    path = tmp_path / "missing" / "site.log"
    plugin = Logs(bus, LogsOptions(file=path))
    with pytest.raises(ConfigError, match=f"log file '{path}' cannot be opened for appending"):
        plugin.subscribe()
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    assert bus.listeners("graceful") == ()


def test_json_formatter_stands_alone() -> None:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "n=%d", (3,), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "n=3"


def test_real_site_rotates_its_json_log_on_sigusr1_and_stops_its_task_on_sigterm(
    spawn: Callable[..., Child], tmp_path: Path
) -> None:
    """A child under block(): logrotate's rename + SIGUSR1 moves the log to a new
    file; SIGTERM stops the hourly task and releases the request thread at once."""
    path = tmp_path / "site.jsonl"
    child = spawn(["tests/children/runtime_site.py", str(path)])
    reports = {child.next_report() for _ in range(3)}
    assert reports == {"task failure logged", "request holds 1", "started"}, child.output()
    rotated = tmp_path / "site.jsonl.1"
    path.rename(rotated)
    child.signal(signal.SIGUSR1)
    child.expect("graceful")
    child.signal(signal.SIGTERM)
    child.expect("stop_thread 1")
    child.expect("exited 0")
    assert child.wait() == 0, child.output()

    old = [json.loads(line) for line in lines(rotated)]
    new = [json.loads(line) for line in lines(path)]
    assert [e["message"] for e in old][-1] == "Bus graceful", "logged before the reopen"
    failure = next(e for e in old if e["message"].startswith("Task 'tick' failed"))
    assert failure["exception"].endswith("RuntimeError: the run fails on purpose")
    messages = [e["message"] for e in new]
    assert messages[0] == "Bus stopping"
    assert "Bus stopped" in messages and "Bus exiting" in messages
    assert not any("still running" in m for m in messages), messages
