"""The health plugin: probes answered in front of the apps, and a drain before the servers stop.

In-process tests run a real engine on a free loopback port with a clock the
test moves (``ManualClock``), so "readiness is 503 while the server still
accepts" is shown at a point the test chooses, not raced against a timer.
The ``sitebus run`` and ``sitebus serve`` tests use real child processes and
the real clock; a drain that would last hours is ended by a second Ctrl-C.
"""

from __future__ import annotations

import http.client
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import CHILDREN, WAIT, Child
from sitebus import Bus, StartError, State
from sitebus.errors import ConfigError
from sitebus.plugins.health import Health, HealthOptions
from sitebus.servers import ServerOptions, Sockets, SocketsOptions, load_engine
from sitebus.site.assemble import site_bus
from sitebus.site.config import load_table
from test_run import expect, listening_port, run_site, write_site
from test_tasks import ManualClock

Spawn = Callable[..., Child]


def request(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request(method, path, headers={"Connection": "close"})
        response = conn.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


class Recorder:
    """A WSGI and an ASGI app that answer every path, and note each path they saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.seen.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"app {environ['PATH_INFO']}".encode()]

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"app {scope['path']}".encode()})


class Site:
    """A bus serving ``Recorder`` behind ``Health`` on one engine; ``port`` once started."""

    def __init__(self, engine: str, drain_delay: float = 0.0) -> None:
        self.bus = Bus(listener_timeout=2 * WAIT, exit_timeout=4 * WAIT)
        self.clock = ManualClock()
        self.logged: list[str] = []
        self.bus.subscribe("log", lambda message, level, exc: self.logged.append(message))
        self.health = Health(self.bus, HealthOptions(drain_delay=drain_delay, clock=self.clock))
        self.app = Recorder()
        if engine == "uvicorn":
            served: Any = self.health.asgi(self.app.asgi)
        else:
            served = self.health.wsgi(self.app.wsgi)
        self.sockets = Sockets(self.bus, SocketsOptions(binds=("127.0.0.1:0",)))
        options = ServerOptions(graceful_timeout=10.0)
        self.server = load_engine(engine)(self.bus, served, self.sockets, options)
        for plugin in (self.health, self.sockets, self.server):
            plugin.subscribe()

    @property
    def port(self) -> int:
        port: int = self.sockets.listeners[0].socket.getsockname()[1]
        return port


@pytest.fixture(params=["cheroot", "uvicorn"], ids=["wsgi-cheroot", "asgi-uvicorn"])
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def site(engine: str) -> Iterator[Site]:
    """A site whose stop does not drain."""
    site = Site(engine)
    yield site
    site.bus.stop()


def test_probes_answer_200_in_front_of_the_app_which_never_sees_them(site: Site) -> None:
    with site.bus.running():
        status, headers, body = request(site.port, "/healthz")
        assert (status, body) == (200, b"live\n")
        assert headers["cache-control"] == "no-store"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert request(site.port, "/readyz")[::2] == (200, b"ready\n")
        assert request(site.port, "/")[::2] == (200, b"app /")
        assert request(site.port, "/healthz/more")[::2] == (200, b"app /healthz/more")
        assert site.app.seen == ["/", "/healthz/more"], "the probe paths are the plugin's alone"


def test_head_gets_the_headers_and_other_methods_405(site: Site) -> None:
    with site.bus.running():
        status, headers, body = request(site.port, "/readyz", "HEAD")
        assert (status, body) == (200, b"")
        assert headers["content-length"] == "6"  # what GET would send
        assert request(site.port, "/healthz", "POST")[0] == 405
        assert site.app.seen == []


def test_readiness_flips_before_the_server_stops_accepting(engine: str) -> None:
    """During the drain /readyz is 503, new connections still accepted and served; then refused."""
    site = Site(engine, drain_delay=30)
    site.bus.start()
    port = site.port
    stopper = threading.Thread(target=site.bus.stop)
    stopper.start()
    try:
        site.clock.wait_for_sleepers(1)  # the drain has begun: the bus is STOPPING
        assert site.bus.state is State.STOPPING
        assert request(port, "/readyz")[::2] == (503, b"not ready: the bus is stopping\n")
        assert request(port, "/healthz")[::2] == (200, b"live\n"), "a drain must not look dead"
        assert request(port, "/")[::2] == (200, b"app /"), "a new connection is still served"
        assert any(line.startswith("Draining for 30 s") for line in site.logged), site.logged
    finally:
        site.clock.advance(30)
        stopper.join(WAIT)
    assert not stopper.is_alive()
    assert site.bus.state is State.STOPPED
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_liveness_fails_while_a_graceful_reload_holds_the_bus(site: Site) -> None:
    """A main thread stuck in a transition means the site could not even stop: not live."""
    entered, release = threading.Event(), threading.Event()

    def stuck_reload() -> None:
        entered.set()
        release.wait(WAIT)

    site.bus.subscribe("graceful", stuck_reload)
    with site.bus.running():
        reloader = threading.Thread(target=site.bus.graceful)
        reloader.start()
        assert entered.wait(WAIT)
        assert request(site.port, "/healthz")[::2] == (503, b"not live: the bus is started\n")
        assert request(site.port, "/readyz")[0] == 200
        release.set()
        reloader.join(WAIT)
        assert request(site.port, "/healthz")[0] == 200


def test_a_start_that_rolls_back_does_not_drain() -> None:
    """Nobody was sent traffic: the rollback stops at once (the clock is never moved)."""
    bus = Bus(listener_timeout=WAIT)
    health = Health(bus, HealthOptions(drain_delay=1e6, clock=ManualClock()))
    health.subscribe()

    @bus.subscribe("start", priority=99)
    def fail() -> None:
        raise RuntimeError("no database")

    with pytest.raises(StartError):
        bus.start()
    assert bus.state is State.STOPPED
    health.unsubscribe()


def test_a_stop_without_a_start_or_with_no_delay_returns_at_once() -> None:
    bus = Bus()
    Health(bus, HealthOptions(clock=ManualClock())).stop()
    no_delay = Health(bus, HealthOptions(drain_delay=0, clock=ManualClock()))
    no_delay.subscribe()
    with bus.running():
        pass
    no_delay.unsubscribe()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"live": "healthz"}, "HealthOptions.live: 'healthz' is not a path"),
        ({"ready": "/ready?x=1"}, "HealthOptions.ready: '/ready?x=1' is not a path"),
        ({"live": "/x", "ready": "/x"}, "HealthOptions.ready: '/x' is also the live path"),
        ({"drain_delay": -1}, "HealthOptions.drain_delay: -1 is out of range"),
        ({"drain_delay": "5"}, "HealthOptions.drain_delay: expected float, got str '5'"),
    ],
)
def test_bad_options_are_a_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        HealthOptions(**options)


# -- the site file --------------------------------------------------------------

APP = {"app": [{"mount": "/", "wsgi": "plain_app:app"}]}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"live": "health"}, "<site table>: health.live: 'health' is not a path"),
        ({"ready": "/healthz"}, "<site table>: health.ready: '/healthz' is also the live path"),
        ({"drain_delay": -2}, "<site table>: health.drain_delay: -2 is out of range"),
        ({"drain": 5}, '<site table>: health.drain: unknown key; did you mean "drain_delay"?'),
        ({"clock": "x"}, "<site table>: health.clock: unknown key"),
    ],
)
def test_a_bad_health_table_is_one_line_naming_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_table({**APP, "health": table})
    assert str(raised.value).startswith(message), raised.value
    assert "\n" not in str(raised.value)


def test_the_site_bus_leaves_time_for_the_drain_delay() -> None:
    plain = site_bus(load_table({**APP, "site": {"graceful_timeout": 10}}))
    drained = site_bus(
        load_table({**APP, "site": {"graceful_timeout": 10}, "health": {"drain_delay": 100}})
    )
    assert drained.exit_timeout is not None and plain.exit_timeout is not None
    assert drained.exit_timeout == plain.exit_timeout + 100
    assert drained.listener_timeout is not None and drained.listener_timeout > 100


HEALTH_SITE = """
[[server]]
bind = "127.0.0.1:0"

[[app]]
mount = "/"
{app}

[health]
drain_delay = 1e6
"""


@pytest.mark.parametrize(
    "app", ['wsgi = "plain_app:app"', 'asgi = "starlette_app:app"'], ids=["wsgi", "asgi"]
)
def test_run_drains_on_stop_but_not_on_restart(spawn: Spawn, tmp_path: Path, app: str) -> None:
    """A restart keeps the sockets: no drain. A stop drains; a second Ctrl-C ends it (status 1)."""
    site = write_site(tmp_path, HEALTH_SITE.format(app=app))
    child, port = run_site(spawn, site)
    assert request(port, "/healthz")[::2] == (200, b"live\n")
    assert request(port, "/readyz")[::2] == (200, b"ready\n")
    child.signal(signal.SIGHUP)  # a drain of 1e6 s would outlast the test's bound
    assert listening_port(child) == port
    assert request(port, "/readyz")[0] == 200
    child.signal(signal.SIGINT)
    assert expect(child, "Draining for 1e+06 s").endswith("/readyz answers 503")
    assert request(port, "/readyz")[::2] == (503, b"not ready: the bus is stopping\n")
    assert request(port, "/healthz")[0] == 200
    status, _, body = request(port, "/hello" if "starlette" in app else "/")
    assert status == 200 and body.startswith((b"plain ", b"starlette")), body
    child.signal(signal.SIGINT)
    expect(child, "exited 1")
    assert child.wait() == 1, child.output()


def test_check_lists_the_health_section(tmp_path: Path) -> None:
    from test_check import sitebus

    site = write_site(tmp_path, HEALTH_SITE.format(app='wsgi = "plain_app:app"'))
    done = sitebus("check", str(site))
    assert done.returncode == 0, done.stderr
    assert "plugins: signals, health" in done.stdout.splitlines()


def test_run_with_a_bad_health_table_says_one_line(tmp_path: Path) -> None:
    from test_check import sitebus

    site = write_site(
        tmp_path, '[[app]]\nmount = "/"\nwsgi = "plain_app:app"\n[health]\nlive = 1\n'
    )
    done = sitebus("run", str(site))
    assert done.returncode == 1
    assert done.stderr == f"sitebus: error: {site}: health.live: expected str, got integer 1\n"


def test_serve_health_answers_and_stops_with_no_delay(spawn: Spawn) -> None:
    args = ["hello_app:app", "--bind", "127.0.0.1:0", "--health", "--drain-delay", "0"]
    child = spawn([str(CHILDREN / "serve_reporting.py"), *args], cwd=CHILDREN)
    line = child.expect("cheroot serving on http://127.0.0.1:")
    port = int(line.rsplit(":", 1)[1])
    assert request(port, "/healthz")[::2] == (200, b"live\n")
    assert request(port, "/readyz")[::2] == (200, b"ready\n")
    child.signal(signal.SIGTERM)
    child.expect("exited 0")
    assert child.wait() == 0


def test_a_hosted_site_has_no_probes_and_no_drain() -> None:
    """The host process answers for the process; a drain would only hold up its exit."""
    from sitebus.site.assemble import assemble
    from sitebus.site.config import check_imports

    config = load_table({**APP, "health": {}}, directory=Path(__file__).parent / "site_apps")
    site = assemble(config, check_imports(config), Bus(), hosted=True)
    assert site.health is None
    assert not any(isinstance(plugin, Health) for plugin in site.plugins)


def test_serve_refuses_a_bad_drain_delay() -> None:
    from test_serve import run_sitebus

    done = run_sitebus("serve", "hello_app:app", "--drain-delay", "-1")
    assert done.returncode == 2
    assert "argument --drain-delay: '-1' is not a number of seconds from 0 to 86400" in done.stderr
