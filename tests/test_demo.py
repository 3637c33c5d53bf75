"""The demo site of ``examples/site/``, tested without ``sitebus run``.

The site file is loaded with ``sitebus.site.config``, its apps mounted with
``site_app``, and the bus put together by hand: the ``Persistence`` plugin the
file names, the sockets on port 0 and uvicorn (the engine a site with an ASGI
app gets). Requests are real HTTP; the visits are read back from the sqlite3
file itself.
"""

from __future__ import annotations

import http.client
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sitebus import Bus
from sitebus.servers import ServerOptions, Sockets, SocketsOptions, load_engine
from sitebus.site.config import check_imports, load
from sitebus.site.mount import site_app

SITE = Path(__file__).parents[1] / "examples" / "site" / "site.toml"
WAIT = 30.0


class Demo:
    """The demo site's bus, serving on a free port with its database in ``database``."""

    def __init__(self, database: Path) -> None:
        config = load(SITE, ["server.bind=127.0.0.1:0", f"plugin.path={database}"])
        imported = check_imports(config)
        kind, app = site_app(config, imported)
        assert kind == "asgi"  # Starlette is ASGI: the whole site runs on uvicorn
        self.bus = Bus(listener_timeout=2 * WAIT)
        self.logged: list[str] = []
        self.bus.subscribe("log", lambda message, level, exc: self.logged.append(message))
        (plugin,) = config.plugins
        (persistence,) = imported.plugins
        self.persistence: Any = persistence(  # the demo's visits.db.Persistence
            self.bus, **plugin.options
        )
        self.persistence.subscribe()
        self.sockets = Sockets(self.bus, SocketsOptions(binds=config.servers[0].binds))
        self.sockets.subscribe()
        engine = load_engine("uvicorn")
        engine(self.bus, app, self.sockets, ServerOptions(graceful_timeout=5.0)).subscribe()

    @property
    def port(self) -> int:
        port: int = self.sockets.listeners[0].socket.getsockname()[1]
        return port

    def get(self, path: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    path = list(sys.path)  # check_imports puts the site's directory first
    demo = Demo(tmp_path / "visits.sqlite3")
    yield demo
    demo.bus.stop()
    sys.path[:] = path


def visits_in(database: Path) -> dict[str, int]:
    """The visit counts, read from the sqlite3 file with a connection of our own."""
    connection = sqlite3.connect(database)
    try:
        return dict(connection.execute("SELECT page, count FROM visits"))
    finally:
        connection.close()


def test_the_site_file_mounts_three_frameworks_an_index_and_the_database_with_autoreload() -> None:
    path = list(sys.path)
    config = load(SITE)
    check_imports(config)
    sys.path[:] = path
    assert {(app.mount, app.kind) for app in config.apps} == {
        ("/", "wsgi"),
        ("/flask", "wsgi"),
        ("/starlette", "asgi"),
        ("/bottle", "wsgi"),
    }
    assert [server.binds for server in config.servers] == [("127.0.0.1:8080",)]
    assert [plugin.use for plugin in config.plugins] == ["visits.db:Persistence"]
    assert config.autoreload is not None and config.autoreload.enabled


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("/", '<a href="/flask/">Flask</a>'),
        ("/flask/", "Flask at /flask/"),
        ("/starlette/", "Starlette at /starlette/"),
        ("/bottle/", "Bottle at /bottle/"),
    ],
)
def test_every_framework_answers_under_its_prefix_and_builds_urls_with_it(
    demo: Demo, path: str, text: str
) -> None:
    with demo.bus.running():
        status, body = demo.get(path)
    assert status == 200
    assert text in body
    assert "1 visit(s)" in body


def test_visits_are_counted_in_the_sqlite_file_and_shown_on_the_index(
    demo: Demo, tmp_path: Path
) -> None:
    with demo.bus.running():
        for path in ["/flask/", "/flask/", "/starlette/", "/bottle/", "/bottle/", "/bottle/"]:
            assert demo.get(path)[0] == 200
        status, index = demo.get("/")
    assert status == 200
    assert "Flask</a>: 2 visit(s)" in index
    assert "Starlette</a>: 1 visit(s)" in index
    assert "Bottle</a>: 3 visit(s)" in index
    assert visits_in(tmp_path / "visits.sqlite3") == {
        "flask": 2,
        "starlette": 1,
        "bottle": 3,
        "index": 1,
    }


def test_an_unknown_path_is_a_404_and_no_visit(demo: Demo, tmp_path: Path) -> None:
    with demo.bus.running():
        assert demo.get("/favicon.ico")[0] == 404
        assert demo.get("/flask/nowhere")[0] == 404
    assert visits_in(tmp_path / "visits.sqlite3") == {}


def test_request_threads_of_every_framework_count_concurrently_without_losing_a_visit(
    demo: Demo, tmp_path: Path
) -> None:
    """WSGI apps on a2wsgi's pool and Starlette's pool share one connection, under a lock."""
    failures: list[BaseException] = []

    def visit(path: str) -> None:
        try:
            for _ in range(10):
                assert demo.get(path)[0] == 200
        except BaseException as exc:
            failures.append(exc)

    with demo.bus.running():
        clients = [
            threading.Thread(target=visit, args=(path,))
            for path in ["/flask/", "/starlette/", "/bottle/", "/"] * 2
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(2 * WAIT)
    assert not failures
    counts = {"flask": 20, "starlette": 20, "bottle": 20, "index": 20}
    assert visits_in(tmp_path / "visits.sqlite3") == counts


def test_the_database_opens_before_serving_and_closes_after_the_sockets_closed(
    demo: Demo,
) -> None:
    refused: list[bool] = []

    def on_log(message: str, level: int, exc: object) -> None:
        if message == "Database closed":  # the server and the sockets stopped before
            with socket.socket() as probe:
                probe.settimeout(WAIT)
                refused.append(probe.connect_ex(("127.0.0.1", port)) != 0)

    demo.bus.subscribe("log", on_log)
    with demo.bus.running():
        port = demo.port
        assert demo.get("/")[0] == 200
        assert demo.persistence.is_open
    assert not demo.persistence.is_open
    assert refused == [True]
    opened = demo.logged.index(next(m for m in demo.logged if m.startswith("Database open: ")))
    serving = demo.logged.index(f"uvicorn serving on http://127.0.0.1:{port}")
    assert opened < serving < demo.logged.index("Database closed")
