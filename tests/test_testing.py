"""The test kit, used as a user would: a real pytest run of a project's test file."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from sitebus import Bus, State
from sitebus.errors import ConfigError
from sitebus.testing import running_site

pytest_plugins = ["pytester"]

FLASK_APP = """
from flask import Flask, url_for

app = Flask(__name__)


@app.get("/hello")
def hello():
    return f"hello from {url_for('hello')}"
"""

DATABASE_PLUGIN = '''
import os
import sqlite3

from sitebus import Plugin, priority


class Database(Plugin):
    """Opens a sqlite database at start and closes it at stop; notes both in a log."""

    def __init__(self, bus, path, log):
        super().__init__(bus)
        self.path, self.log, self.db = path, log, None

    def note(self, what):
        with open(self.log, "a") as stream:
            stream.write(f"{what} {os.getpid()}\\n")

    @priority(20)
    def start(self):
        self.db = sqlite3.connect(self.path)
        self.note("open")

    @priority(20)
    def stop(self):
        if self.db is not None:
            self.db.close()
            self.db = None
            self.note("closed")
'''

SITE = """
[[server]]
bind = "127.0.0.1:8080"  # the fixture rebinds it to a free port

[[app]]
mount = "/shop"
wsgi = "kit_shop:app"

[[plugin]]
use = "kit_store:Database"
path = "shop.db"
log = "db.log"

[signals]
[pidfile]
path = "site.pid"
"""

USER_TESTS = """
import urllib.request

import pytest


@pytest.fixture
def sitebus_config():
    return "site.toml"


def get(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_flask_at_its_prefix(sitebus_site):
    assert sitebus_site.url.startswith("http://127.0.0.1:")
    assert not sitebus_site.url.endswith("/")
    assert get(sitebus_site.url + "/shop/hello") == "hello from /shop/hello"


def test_database_is_open(sitebus_site):
    plugin = [p for p in sitebus_site.site.plugins if type(p).__name__ == "Database"][0]
    assert plugin.db is not None
    assert sitebus_site.bus.state.value == "started"


def test_a_failing_test_still_stops_the_site(sitebus_site):
    assert False, "fails on purpose"


def test_a_bare_bus(sitebus_bus):
    seen = []
    sitebus_bus.subscribe("ping", seen.append)
    sitebus_bus.publish("ping", 1)
    assert seen == [1] and sitebus_bus.state.value == "started"
"""


def user_project(root: Path) -> None:
    (root / "kit_shop.py").write_text(FLASK_APP)
    (root / "kit_store.py").write_text(DATABASE_PLUGIN)
    (root / "site.toml").write_text(SITE)


def test_fixtures_run_a_flask_site_with_its_database_in_a_real_pytest_run(
    pytester: pytest.Pytester,
) -> None:
    """A project's tests get the fixtures from the entry point, with no conftest import;
    each test's site is its own, and is stopped (database closed) even when the test fails."""
    user_project(pytester.path)
    pytester.makepyfile(test_shop=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*fails on purpose*"])
    log = (pytester.path / "db.log").read_text().split()
    # Three sites, one after the other in one process: each opened and closed.
    assert log[0::2] == ["open", "closed"] * 3
    assert not (pytester.path / "site.pid").exists()  # [pidfile] stays off


def test_the_default_config_fixture_says_to_override_it(pytester: pytest.Pytester) -> None:
    """sitebus_site without an overridden sitebus_config fails, saying what to override."""
    pytester.makepyfile(test_nothing="def test_it(sitebus_site):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*override the sitebus_config fixture*"])


def test_running_site_takes_a_dict_and_two_sites_follow_each_other(tmp_path: Path) -> None:
    """running_site starts a site given as a dict; a second one after it gets its own bus."""
    user_project(tmp_path)
    log = tmp_path / "db.log"
    table = {
        "app": [{"mount": "/shop", "wsgi": "kit_shop:app"}],
        "plugin": [
            {"use": "kit_store:Database", "path": str(tmp_path / "shop.db"), "log": str(log)}
        ],
    }
    buses = []
    for _ in range(2):
        with running_site(table, directory=tmp_path) as site:
            with urllib.request.urlopen(site.url + "/shop/hello", timeout=30) as response:
                assert response.read() == b"hello from /shop/hello"
            buses.append(site.bus)
    assert buses[0] is not buses[1]
    assert all(bus.state is State.EXITING for bus in buses)
    assert log.read_text().split()[0::2] == ["open", "closed"] * 2


def test_running_site_rejects_a_table_that_is_no_site() -> None:
    """A dict without [[app]] is a ConfigError naming the table and what was expected."""
    with (
        pytest.raises(ConfigError, match=r"<site table>: app: missing"),
        running_site({"server": [{"bind": "127.0.0.1:0"}]}),
    ):
        pass


def test_sitebus_bus_is_started_and_bare(sitebus_bus: Bus) -> None:
    """The sitebus_bus fixture hands out a started bus with no listener on the start channel."""
    assert sitebus_bus.state is State.STARTED
    assert sitebus_bus.listeners("start") == ()
