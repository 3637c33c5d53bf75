"""The command line's standard error: one line format, held until the start is over."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from sitebus import Bus
from sitebus._stderr_log import HeldStderr
from sitebus.plugins.logs import Logs, LogsOptions

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def root_log(bus: Bus) -> Iterator[tuple[HeldStderr, io.StringIO]]:
    """The serve command's set-up: the Logs plugin on the root logger, with a held stderr."""
    out = io.StringIO()
    handler = HeldStderr(hold=True, stream=out)
    logs = Logs(bus, LogsOptions(logger="", level=logging.INFO, handlers=(handler,)))
    logs.subscribe()
    yield handler, out
    logs.unsubscribe()


@pytest.mark.parametrize("show", [True, False])
def test_lines_are_held_until_the_start_is_over(
    bus: Bus, root_log: tuple[HeldStderr, io.StringIO], show: bool
) -> None:
    handler, out = root_log
    bus.log("Bus starting")
    assert out.getvalue() == ""
    handler.finish(show=show)
    assert ("Bus starting" in out.getvalue()) is show
    bus.log("Bus stopping")
    assert out.getvalue().endswith("INFO sitebus: Bus stopping\n")


def test_the_bus_and_other_loggers_write_one_format_once(
    bus: Bus, root_log: tuple[HeldStderr, io.StringIO]
) -> None:
    """The bus's lines and an app's records read the same, each written once."""
    handler, out = root_log
    handler.finish(show=True)
    bus.log("Bus started")
    logging.getLogger("an_app").warning("the app logs too")
    logging.getLogger("an_app").debug("below the level")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(rf"{STAMP} INFO sitebus: Bus started", lines[0])
    assert re.fullmatch(rf"{STAMP} WARNING an_app: the app logs too", lines[1])


def test_a_handler_not_held_writes_at_once() -> None:
    out = io.StringIO()
    handler = HeldStderr(hold=False, stream=out)
    handler.handle(logging.makeLogRecord({"msg": "now", "levelno": logging.INFO}))
    assert out.getvalue() == "now\n"
