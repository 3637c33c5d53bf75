"""The seed example: a database that closes only after the server has stopped."""

from __future__ import annotations

import http.client
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

from sitebus import Bus

EXAMPLE = Path(__file__).parents[1] / "examples" / "persistence.py"


@pytest.fixture(scope="module")
def persistence() -> ModuleType:
    spec = importlib.util.spec_from_file_location("persistence_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def get(url: str) -> str:
    host_port = url.removeprefix("http://").rstrip("/")
    host, port = host_port.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", "/counted")
        response = connection.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        connection.close()


def test_database_serves_many_request_threads_and_closes_after_the_server(
    persistence: ModuleType, tmp_path: Path
) -> None:
    bus = Bus(listener_timeout=30)
    events: list[str] = []
    bus.subscribe("log", lambda message, level, exc: events.append(message))
    database = persistence.Database(bus, tmp_path / "visits.sqlite3")
    server = persistence.WebServer(bus, database)
    database.subscribe()
    server.subscribe()

    with bus.running():
        url = server.url
        answers: list[str] = []
        clients = [
            threading.Thread(target=lambda: answers.extend(get(url) for _ in range(10)))
            for _ in range(4)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(60)
        assert len(answers) == 40
        assert get(url) == "/counted has been visited 41 time(s)\n"
        assert database.record_visit("/counted") == 42

    assert events.index("Web server stopped") < events.index("Database closed")
    assert events.index("Database open: " + str(tmp_path / "visits.sqlite3")) < events.index(
        "Serving on " + url
    )


def test_database_stop_is_safe_when_its_start_never_ran(
    persistence: ModuleType, tmp_path: Path
) -> None:
    bus = Bus()
    persistence.Database(bus, tmp_path / "never.sqlite3").stop()
