"""The bus log shows on stderr until the application configures logging, then goes there."""

from __future__ import annotations

import re
import subprocess
import sys

STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO sitebus: Bus started$", re.M)


def _stderr_of(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == ""
    return result.stderr


def test_with_no_logging_configured_the_bus_log_reaches_stderr_with_a_timestamp() -> None:
    """As CherryPy's engine log does: INFO lines, timestamped, with nothing configured."""
    stderr = _stderr_of("import sitebus; b = sitebus.Bus(); b.start(); b.log('hello'); b.stop()")
    assert STAMPED.search(stderr), stderr
    assert "INFO sitebus: hello" in stderr
    assert "DEBUG" not in stderr


def test_configured_logging_takes_over_and_nothing_is_written_twice() -> None:
    code = (
        "import logging, sys, sitebus\n"
        "logging.basicConfig(stream=sys.stderr, level=logging.INFO, format='CONF %(message)s')\n"
        "b = sitebus.Bus(); b.start(); b.stop()\n"
    )
    stderr = _stderr_of(code)
    assert stderr.count("Bus started") == 1, stderr
    assert "CONF Bus started" in stderr


def test_the_logs_plugin_takes_over_cleanly() -> None:
    code = (
        "import sitebus\n"
        "from sitebus.plugins.logs import Logs, LogsOptions\n"
        "b = sitebus.Bus(); Logs(b, LogsOptions(format='json')).subscribe()\n"
        "b.start(); b.stop()\n"
    )
    stderr = _stderr_of(code)
    assert stderr.count("Bus started") == 1, stderr
    assert '"message": "Bus started"' in stderr


def test_a_level_set_on_the_logger_is_respected_without_handlers() -> None:
    code = (
        "import logging, sitebus\n"
        "logging.getLogger('sitebus').setLevel(logging.ERROR)\n"
        "b = sitebus.Bus(); b.start(); b.log('bad', logging.ERROR); b.stop()\n"
    )
    stderr = _stderr_of(code)
    assert "Bus started" not in stderr
    assert "ERROR sitebus: bad" in stderr
