"""The command line's stderr log: its lines, its hold, and the hook that waits for ``logging``."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sitebus._stderr_log import StderrLog, _AfterImport

STAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]"


def test_a_line_reads_time_level_logger_and_message() -> None:
    out = io.StringIO()
    log = StderrLog("info", hold=False, stream=out)
    log.bus_message("Bus started", 20, None)
    log.bus_message("not shown at info", 10, None)
    log.bus_message("odd level", 25, None)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(rf"{STAMP} INFO sitebus: Bus started", lines[0])
    assert re.fullmatch(rf"{STAMP} Level 25 sitebus: odd level", lines[1])


def test_an_exception_is_followed_by_its_traceback() -> None:
    out = io.StringIO()
    log = StderrLog("debug", hold=False, stream=out)
    try:
        raise OSError("disk full")
    except OSError as exc:
        log.bus_message("Traceback of the failure in purge:", 10, exc)
    text = out.getvalue()
    assert re.match(rf"{STAMP} DEBUG sitebus: Traceback of the failure in purge:\n", text)
    assert "Traceback (most recent call last):" in text
    assert text.endswith("OSError: disk full\n")


@pytest.mark.parametrize("show", [True, False])
def test_lines_are_held_until_the_start_is_over(show: bool) -> None:
    out = io.StringIO()
    log = StderrLog("info", hold=True, stream=out)
    log.bus_message("Bus starting", 20, None)
    assert out.getvalue() == ""
    log.finish(show=show)
    assert ("Bus starting" in out.getvalue()) is show
    log.bus_message("Bus stopping", 20, None)
    assert out.getvalue().endswith("INFO sitebus: Bus stopping\n")


def test_the_hook_runs_once_right_after_the_module_first_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "late_module.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "late_module", raising=False)
    seen: list[int] = []
    hook = _AfterImport("late_module", lambda: seen.append(sys.modules["late_module"].VALUE))
    monkeypatch.setattr(sys, "meta_path", [hook, *sys.meta_path])
    import json  # another module passes through untouched

    assert seen == []
    import late_module

    assert seen == [42]
    assert hook not in sys.meta_path
    assert late_module.__spec__ is not None and late_module.__spec__.origin is not None
    assert late_module.__spec__.origin.endswith("late_module.py")
    del json


def test_a_cancelled_hook_leaves_and_calls_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "later_module.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[str] = []
    hook = _AfterImport("later_module", lambda: seen.append("called"))
    monkeypatch.setattr(sys, "meta_path", [hook, *sys.meta_path])
    hook.cancel()
    assert hook not in sys.meta_path
    import later_module  # noqa: F401  # the import is the test

    assert seen == []


RELEASE = """
import io, logging
from sitebus._stderr_log import StderrLog
out = io.StringIO()
log = StderrLog("info", hold=False, stream=out)
log.take_stdlib_records()
logging.getLogger("app").warning("through the site's log")
log.bus_message("Bus started", 20, None)
log.release_stdlib_records()
print(out.getvalue().count("\\n"), len(logging.getLogger().handlers))
"""


def test_records_of_stdlib_loggers_and_the_bus_share_the_log_until_released() -> None:
    out = subprocess.run(
        [sys.executable, "-c", RELEASE], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["2", "0"]
