"""Each engine on the bus's sockets: real HTTP on loopback, graceful stops, no resets."""

from __future__ import annotations

import asyncio
import functools
import http.client
import inspect
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sitebus import Bus, SitebusError, StartError
from sitebus.errors import ConfigError
from sitebus.plugins.threads import Threads
from sitebus.servers import ServerOptions, Sockets, SocketsOptions, load_engine
from sitebus.servers.base import is_asgi

WAIT = 30.0
ENGINES = ["cheroot", "wsgiref", "waitress", "uvicorn"]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def get(where: int | str, path: str = "/", timeout: float = WAIT) -> tuple[int, bytes]:
    """GET over a fresh connection to a loopback port or a Unix socket path."""
    if isinstance(where, int):
        conn = http.client.HTTPConnection("127.0.0.1", where, timeout=timeout)
    else:
        conn = _UnixConnection(where, timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class App:
    """A WSGI and an ASGI app that count slow requests in flight, for the tests to wait on."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.changed = threading.Condition()
        self.lifespan: list[str] = []
        self.fail_startup = False
        # /overrun: a request that outlives any graceful timeout, until released.
        self.release = threading.Event()
        self.overrun_done = False

    def _slow_began(self) -> None:
        with self.changed:
            self.in_flight += 1
            self.changed.notify_all()

    def wait_in_flight(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.in_flight >= count, WAIT)

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/slow":
            self._slow_began()
            time.sleep(0.3)  # the slow request under test, not a wait of the test's own
        elif environ["PATH_INFO"] == "/overrun":
            self._slow_began()
            self.release.wait(WAIT)
            self.overrun_done = True
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rpartition(".")[2]
                self.lifespan.append(kind)
                if kind == "startup" and self.fail_startup:
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                await send({"type": f"{message['type']}.complete"})
                if kind == "shutdown":
                    return
        if scope["path"] == "/slow":
            self._slow_began()
            await asyncio.sleep(0.3)
        elif scope["path"] == "/overrun":
            self._slow_began()
            await asyncio.sleep(WAIT)  # uvicorn cancels it at the graceful timeout
            self.overrun_done = True
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})


class Site:
    """A bus with Sockets and one engine serving ``App``; ``port`` once started."""

    def __init__(
        self,
        engine: str,
        binds: tuple[str, ...] = ("127.0.0.1:0",),
        options: ServerOptions | None = None,
    ) -> None:
        self.bus = Bus(listener_timeout=2 * WAIT, exit_timeout=4 * WAIT)  # above any graceful one
        self.app = App()
        self.logged: list[str] = []
        self.bus.subscribe("log", lambda message, level, exc: self.logged.append(message))
        self.sockets = Sockets(self.bus, SocketsOptions(binds=binds))
        handler = self.app.asgi if engine == "uvicorn" else self.app.wsgi
        options = options or ServerOptions(graceful_timeout=10.0, threads=8)
        self.server = load_engine(engine)(self.bus, handler, self.sockets, options)
        self.sockets.subscribe()
        self.server.subscribe()

    @property
    def port(self) -> int:
        port: int = self.sockets.listeners[0].socket.getsockname()[1]
        return port


@pytest.fixture(params=ENGINES)
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    site = Site(request.param)
    yield site
    site.bus.stop()


def test_engine_answers_on_tcp_and_unix_socket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    for engine in ENGINES:
        path = str(tmp_path / f"{engine}.sock")
        site = Site(engine, ("127.0.0.1:0", f"unix:{path}"))
        with site.bus.running():
            assert get(site.port) == (200, b"hello"), engine
            assert get(path) == (200, b"hello"), engine
            assert f"{engine} serving on http://127.0.0.1:{site.port}" in site.logged
            assert f"{engine} serving on http+unix://{path}" in site.logged


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("engine", ["cheroot", "uvicorn"])
def test_tls_with_certificate_and_key(engine: str, tmp_path: Path) -> None:
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    site = Site(engine, options=ServerOptions(graceful_timeout=10.0, certfile=cert, keyfile=key))
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False
    with site.bus.running():
        conn = http.client.HTTPSConnection("127.0.0.1", site.port, timeout=WAIT, context=context)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"hello")
        finally:
            conn.close()
        assert f"{engine} serving on https://127.0.0.1:{site.port}" in site.logged


def test_engine_without_tls_refuses_a_certificate() -> None:
    with pytest.raises(SitebusError, match="wsgiref engine does not support TLS"):
        Site("wsgiref", options=ServerOptions(certfile="cert.pem"))


def test_a_graceful_timeout_the_bus_would_cut_short_is_refused() -> None:
    bus = Bus(exit_timeout=20.0)
    sockets = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",)))
    engine = load_engine("wsgiref")
    with pytest.raises(ConfigError, match="graceful_timeout 30 s leaves no time within the bus"):
        engine(bus, App().wsgi, sockets, ServerOptions(graceful_timeout=30.0))
    engine(bus, App().wsgi, sockets, ServerOptions(graceful_timeout=10.0))  # fits


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"graceful_timeout": -1.0}, r"graceful_timeout: -1.0 is out of range: seconds from 0"),
        ({"graceful_timeout": float("nan")}, "graceful_timeout: nan is out of range"),
        ({"graceful_timeout": 1e10}, r"graceful_timeout: 10000000000.0 is out .* \(a day\)$"),
        ({"graceful_timeout": "5"}, "graceful_timeout: expected float, got str '5'$"),
        ({"threads": 0}, "threads: 0 is out of range: a number of threads from 1"),
    ],
)
def test_bad_server_options_are_a_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerOptions(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backlog": 0}, "backlog: 0 is out of range: a queue length from 1 to 65535"),
        ({"backlog": 10**20}, "backlog: 100000000000000000000 is out of range"),
        ({"backlog": True}, "backlog: expected int, got bool True"),
        ({"unix_mode": 0o7777}, r"unix_mode: 0o7777 is out of range: permission bits 0 to 777"),
        ({"unix_mode": -1}, "unix_mode: -0o1 is out of range"),
    ],
)
def test_out_of_range_socket_options_are_a_config_error(
    options: dict[str, Any], message: str
) -> None:
    """The bounds the command line checks hold for the options objects too."""
    with pytest.raises(ConfigError, match=message):
        SocketsOptions(**options)


def test_missing_certificate_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "cert.pem")
    with pytest.raises(SitebusError, match=f'TLS file "{missing}" does not exist'):
        Site("cheroot", options=ServerOptions(certfile=missing))


def test_graceful_stop_lets_slow_requests_finish(site: Site) -> None:
    site.bus.start()
    results: list[tuple[int, bytes] | BaseException] = []

    def client() -> None:
        try:
            results.append(get(site.port, "/slow"))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=client) for _ in range(5)]
    for thread in threads:
        thread.start()
    site.app.wait_in_flight(5)
    site.bus.stop()
    for thread in threads:
        thread.join(WAIT)
    assert results == [(200, b"hello")] * 5


@pytest.mark.parametrize("engine", ENGINES)
def test_a_request_overrunning_the_graceful_timeout_does_not_hold_the_stop(engine: str) -> None:
    site = Site(engine, options=ServerOptions(graceful_timeout=0.2, threads=4))
    site.bus.start()
    client = threading.Thread(target=lambda: _outcome(site.port, "/overrun"))
    client.start()
    site.app.wait_in_flight(1)
    try:
        site.bus.stop()
        assert not site.app.overrun_done, "the stop waited for the request to end"
        if engine != "uvicorn":  # uvicorn cancels the request and says so itself
            assert any("still running at the graceful timeout" in m for m in site.logged)
    finally:
        site.app.release.set()
        client.join(WAIT)


def _outcome(port: int, path: str) -> object:
    """The status of a GET, or the exception that ended it."""
    try:
        return get(port, path)[0]
    except Exception as exc:
        return exc


def test_stop_under_a_stream_of_connections_answers_or_refuses_never_resets(site: Site) -> None:
    """Every connection made while the site stops gets its answer or is refused."""
    site.bus.start()
    port = site.port
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    enough = threading.Event()

    def client() -> None:
        for _ in range(2000):
            try:
                status, _ = get(port)
                outcome = f"status {status}"
            except ConnectionRefusedError:
                outcome = "refused"
            except Exception as exc:
                outcome = type(exc).__name__
            with lock:
                outcomes[outcome] += 1
                if outcomes["status 200"] >= 100:
                    enough.set()
            if outcome == "refused":
                return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert enough.wait(WAIT)
    site.bus.stop()
    for thread in threads:
        thread.join(WAIT)
    assert set(outcomes) == {"status 200", "refused"}, outcomes


def test_asgi_lifespan_follows_bus_start_and_stop() -> None:
    site = Site("uvicorn")
    site.bus.start()
    assert site.app.lifespan == ["startup"]
    site.bus.stop()
    assert site.app.lifespan == ["startup", "shutdown"]


def test_asgi_lifespan_startup_failure_fails_the_bus_start() -> None:
    site = Site("uvicorn")
    site.app.fail_startup = True
    with pytest.raises(StartError, match="lifespan startup failed"):
        site.bus.start()
    assert not site.sockets.listeners, "the sockets were closed by the rollback"


class _AsyncCallable:
    async def __call__(self, scope: object, receive: object, send: object) -> None:
        pass


class _SyncCallable:
    def __call__(self, environ: object, start_response: object) -> list[bytes]:
        return []


async def _async_app(scope: object, receive: object, send: object, extra: int = 0) -> None:
    pass


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (_async_app, True),
        (functools.partial(_async_app, extra=1), True),
        (App().asgi, True),
        (_AsyncCallable(), True),
        (App().wsgi, False),
        (_SyncCallable(), False),
        (lambda environ, start_response: [], False),
        (functools.partial(App().wsgi), False),
    ],
    ids=["function", "partial", "bound method", "async __call__", "wsgi method",
         "sync __call__", "lambda", "wsgi partial"],
)  # fmt: skip
def test_is_asgi_sees_coroutine_functions_through_methods_and_partials(
    app: object, expected: bool
) -> None:
    assert is_asgi(app) is expected
    function = app if inspect.isroutine(app) or isinstance(app, functools.partial) else app.__call__
    assert inspect.iscoroutinefunction(function) is expected, "agrees with inspect"


@pytest.mark.parametrize("engine", ["cheroot", "wsgiref", "waitress"])
def test_a_wsgi_engine_refuses_an_asgi_app(engine: str) -> None:
    bus = Bus()
    sockets = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",)))
    with pytest.raises(SitebusError, match=f"The {engine} engine serves WSGI apps, and this"):
        load_engine(engine)(bus, App().asgi, sockets)


def test_engines_are_imported_only_when_chosen() -> None:
    code = (
        "import sys, sitebus.servers, sitebus.cli; "
        "print(sorted(m for m in ('cheroot', 'uvicorn', 'waitress') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_unknown_engine_names_the_known_ones() -> None:
    with pytest.raises(SitebusError, match='Unknown engine "nginx": expected one of cheroot, '):
        load_engine("nginx")


def test_the_wsgiref_accept_loop_has_ended_when_its_stop_returns() -> None:
    """A graceful timeout already spent by the drain does not leave the loop behind.

    The stop used to wait for the loop only until the graceful deadline and
    then close its selector and pipe under it.
    """
    site = Site("wsgiref", options=ServerOptions(graceful_timeout=0.0))
    for _ in range(20):
        site.bus.start()
        assert get(site.port)[0] == 200
        site.bus.stop()
        assert [t for t in threading.enumerate() if t.name == "sitebus-wsgiref"] == []


@pytest.mark.parametrize("engine", ["cheroot", "waitress", "wsgiref"])
def test_request_threads_are_announced_to_the_threads_plugin(engine: str) -> None:
    """Each request thread publishes acquire_thread: start_thread, then stop_thread at the end."""
    site = Site(engine, options=ServerOptions(graceful_timeout=10.0, threads=4))
    Threads(site.bus).subscribe()
    started: list[int] = []
    stopped: list[int] = []
    site.bus.subscribe("start_thread", started.append)
    site.bus.subscribe("stop_thread", stopped.append)
    with site.bus.running():
        for _ in range(6):
            assert get(site.port) == (200, b"hello")
        assert started, "no request thread was announced"
        assert set(started) <= {1, 2, 3, 4}, "a pool of 4 holds indexes 1-4"
    assert sorted(stopped) == sorted(started), "every started thread was stopped"
