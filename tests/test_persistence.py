"""The demo's database plugin, ``examples/site/visits/db.py``, and ``examples/persistence.py``.

The plugin is CherryPy's classic ``Persistence`` example: a sqlite3 file
opened at ``StartOrder.PIDFILE`` and closed at stop, after the servers. The
script builds the demo site's bus in Python and is run here as a real process.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from sitebus import Bus

EXAMPLES = Path(__file__).parents[1] / "examples"
WAIT = 30.0


@pytest.fixture(scope="module")
def db() -> Iterator[ModuleType]:
    """The demo's ``visits.db`` module, imported from ``examples/site``."""
    path = list(sys.path)
    sys.path.insert(0, str(EXAMPLES / "site"))
    import visits.db

    yield visits.db
    sys.path[:] = path


def test_visits_from_many_threads_are_all_counted_and_survive_a_restart(
    db: ModuleType, tmp_path: Path
) -> None:
    bus = Bus(listener_timeout=WAIT)
    database = db.Persistence(bus, tmp_path / "visits.sqlite3")
    database.subscribe()
    with bus.running():
        assert db.database() is database
        threads = [
            threading.Thread(target=lambda: [database.record_visit("/") for _ in range(25)])
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert database.record_visit("/") == 101
    with bus.running():  # the file keeps the counts
        assert database.record_visit("/") == 102
        assert database.counts() == {"/": 102}


def test_without_a_started_database_the_apps_get_a_clear_error(
    db: ModuleType, tmp_path: Path
) -> None:
    bus = Bus()
    database = db.Persistence(bus, tmp_path / "visits.sqlite3")
    with pytest.raises(RuntimeError, match="the site's database is not open"):
        db.database()
    with pytest.raises(RuntimeError, match=r"visits\.sqlite3 is closed"):
        database.record_visit("/")


def test_the_database_stop_is_safe_when_its_start_never_ran(db: ModuleType, tmp_path: Path) -> None:
    db.Persistence(Bus(), tmp_path / "never.sqlite3").stop()
    assert not (tmp_path / "never.sqlite3").exists()


class Script:
    """``examples/persistence.py`` as a child process whose log (stderr) is read with bounds."""

    def __init__(self, *args: str, cwd: Path) -> None:
        script = str(EXAMPLES / "persistence.py")
        self.process = subprocess.Popen(
            [sys.executable, "-u", script, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.log = ""

    def wait_for(self, text: str) -> str:
        """Read the log until it contains ``text``; fail after ``WAIT`` s."""
        assert self.process.stderr is not None
        deadline = time.monotonic() + WAIT
        while text not in self.log:
            ready, _, _ = select.select(
                [self.process.stderr], [], [], max(0.0, deadline - time.monotonic())
            )
            chunk = os.read(self.process.stderr.fileno(), 65536) if ready else b""
            if not chunk:
                raise AssertionError(f"no {text!r} in the log:\n{self.log}")
            self.log += chunk.decode(errors="replace")
        return self.log

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)
        assert self.process.stderr is not None
        self.process.stderr.close()


def test_the_script_serves_the_demo_site_and_closes_the_database_after_the_server(
    tmp_path: Path,
) -> None:
    script = Script("--bind", "127.0.0.1:0", "--database", "visits.sqlite3", cwd=tmp_path)
    try:
        log = script.wait_for("Bus started")
        (url,) = re.findall(r"uvicorn serving on (http://\S+)", log)
        for path in ["/flask/", "/starlette/", "/bottle/"]:
            with urllib.request.urlopen(url + path, timeout=WAIT) as response:
                assert b"1 visit(s)" in response.read()
        with urllib.request.urlopen(url + "/", timeout=WAIT) as response:
            assert b"Bottle</a>: 1 visit(s)" in response.read()
        script.process.send_signal(signal.SIGTERM)
        assert script.process.wait(WAIT) == 0
        log = script.wait_for("Bus exiting")
    finally:
        script.close()
    database = f"Database open: {tmp_path / 'visits.sqlite3'}"
    assert log.index(database) < log.index("uvicorn serving on") < log.index("Database closed")
