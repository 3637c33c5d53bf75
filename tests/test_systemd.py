"""The systemd notify protocol and watchdog, received on a real datagram socket."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CHILDREN, WAIT, Child
from sitebus.bus import Bus, State
from sitebus.errors import ProcessError, StartError
from sitebus.plugins.pidfile import read_running_pid
from sitebus.plugins.systemd import Systemd, SystemdOptions, notify, watchdog_interval
from sitebus.testing import running_site
from test_servers import get

Spawn = Callable[..., Child]


def receive(sock: socket.socket, timeout: float = WAIT, child: Child | None = None) -> str:
    """The next datagram; on timeout, fail with the child's output if there is one."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode()
    except TimeoutError:
        output = f"\n{child.output()}" if child is not None else ""
        raise AssertionError(f"no notify message within {timeout} s{output}") from None


def next_not_watchdog(sock: socket.socket) -> str:
    while (message := receive(sock)) == "WATCHDOG=1":
        pass
    return message


def expect_reloading(message: str, status: str) -> None:
    lines = message.split("\n")
    assert lines[0] == "RELOADING=1", message
    assert lines[1].startswith("MONOTONIC_USEC="), message
    usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 < usec <= now, "CLOCK_MONOTONIC in microseconds, taken before now"
    assert lines[2:] == [f"STATUS={status}"], message


def serve(spawn: Spawn, tmp_path: Path, notify_socket: str) -> tuple[Child, str]:
    where = str(tmp_path / "http.sock")
    child = spawn(
        ["-m", "sitebus", "serve", "hello_app:app", "--bind", f"unix:{where}"],
        env={"NOTIFY_SOCKET": notify_socket},
    )
    return child, where


def test_serve_reports_start_graceful_restart_and_stop_in_order(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket
) -> None:
    child, where = serve(spawn, tmp_path, str(tmp_path / "notify.sock"))
    assert receive(receiver, child=child) == "STATUS=starting"
    assert receive(receiver) == "READY=1\nSTATUS=started"
    status, body = get(where)  # READY=1 means the server already accepts
    assert (status, body) == (200, f"hello {child.pid}".encode())

    child.signal(signal.SIGUSR1)
    expect_reloading(receive(receiver), "reloading")
    assert receive(receiver) == "READY=1\nSTATUS=started"

    child.signal(signal.SIGHUP)
    expect_reloading(receive(receiver), "stopping (restarting)")
    assert receive(receiver) == "STATUS=stopped (restarting)"
    assert receive(receiver) == "STATUS=exiting (restarting)"
    assert receive(receiver) == "STATUS=starting", "the re-executed image, same environment"
    assert receive(receiver) == "READY=1\nSTATUS=started"
    assert get(where) == (200, f"hello {child.pid}".encode()), "same PID after the re-exec"

    child.signal(signal.SIGTERM)
    assert receive(receiver) == "STOPPING=1\nSTATUS=stopping"
    assert receive(receiver) == "STATUS=stopped"
    assert receive(receiver) == "STATUS=exiting"
    assert child.wait() == 0


def test_abstract_notify_socket_receives_ready(spawn: Spawn, tmp_path: Path) -> None:
    """NOTIFY_SOCKET=@name: the '@' stands for the leading NUL of an abstract address."""
    name = f"sitebus-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        child, _ = serve(spawn, tmp_path, "@" + name)
        assert receive(sock, child=child) == "STATUS=starting"
        assert receive(sock) == "READY=1\nSTATUS=started"
        child.signal(signal.SIGTERM)
        assert receive(sock) == "STOPPING=1\nSTATUS=stopping"
        assert child.wait() == 0


def test_notify_without_notify_socket_sends_nothing() -> None:
    assert notify("READY=1", {}) is False


def test_watchdog_pings_at_half_the_interval(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket
) -> None:
    """WATCHDOG_USEC=200000: a ping every 0.1 s, counted loosely over a window."""
    child = spawn(
        ["-m", "sitebus", "serve", "hello_app:app", "--bind", f"unix:{tmp_path / 'h.sock'}"],
        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"},
    )
    assert receive(receiver, child=child) == "STATUS=starting"
    assert receive(receiver) == "READY=1\nSTATUS=started"
    start = time.monotonic()
    pings = 0
    while pings < 10:
        assert receive(receiver) == "WATCHDOG=1"
        pings += 1
    elapsed = time.monotonic() - start
    # Ten pings at 0.1 s take about a second; never faster than the interval allows.
    assert elapsed > 0.5, f"{pings} pings in {elapsed:.2f} s: faster than every 0.1 s"
    child.signal(signal.SIGTERM)
    assert next_not_watchdog(receiver) == "STOPPING=1\nSTATUS=stopping"
    assert child.wait() == 0


def test_watchdog_pings_stop_while_the_bus_is_wedged_and_resume_after(
    bus: Bus, tmp_path: Path, receiver: socket.socket
) -> None:
    """A graceful listener that hangs holds the bus: no ping until it returns."""
    environ = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
    Systemd(bus, environ=environ).subscribe()
    entered, release = threading.Event(), threading.Event()

    def wedged() -> None:
        entered.set()
        release.wait(WAIT)

    bus.subscribe("graceful", wedged)
    bus.start()
    try:
        assert receive(receiver) == "STATUS=starting"
        assert receive(receiver) == "READY=1\nSTATUS=started"
        assert receive(receiver) == "WATCHDOG=1"
        reload = threading.Thread(target=bus.graceful)
        reload.start()
        assert entered.wait(WAIT)
        # At most one ping that had passed its check before the listener began.
        message = next_not_watchdog(receiver)
        assert message.startswith("RELOADING=1"), message
        late = []
        receiver.settimeout(1.0)  # ten intervals without a ping
        with pytest.raises(TimeoutError):
            for _ in range(3):
                late.append(receiver.recv(4096).decode())
        assert late in ([], ["WATCHDOG=1"]), "one ping may have passed its check just before"
        release.set()
        reload.join(WAIT)
        assert next_not_watchdog(receiver) == "READY=1\nSTATUS=started"
        assert receive(receiver) == "WATCHDOG=1", "pings resume once the bus is free"
    finally:
        release.set()
        bus.exit()


def test_run_reports_ready_once_its_servers_accept(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket
) -> None:
    """``sitebus run`` subscribes the plugin by itself when NOTIFY_SOCKET is set."""
    where = tmp_path / "http.sock"
    site = tmp_path / "site.toml"
    site.write_text(
        f'[[server]]\nbind = "unix:{where}"\n\n[[app]]\nmount = "/"\nwsgi = "hello_app:app"\n'
    )
    child = spawn(
        ["-m", "sitebus", "run", str(site)], env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    )
    assert receive(receiver, child=child) == "STATUS=starting"
    assert receive(receiver) == "READY=1\nSTATUS=started"
    assert get(str(where)) == (200, f"hello {child.pid}".encode())
    child.signal(signal.SIGHUP)
    expect_reloading(receive(receiver), "stopping (restarting)")
    assert receive(receiver) == "STATUS=stopped (restarting)"
    assert receive(receiver) == "STATUS=exiting (restarting)"
    assert receive(receiver) == "STATUS=starting"
    assert receive(receiver) == "READY=1\nSTATUS=started"
    child.signal(signal.SIGTERM)
    assert receive(receiver) == "STOPPING=1\nSTATUS=stopping"
    assert child.wait() == 0


def test_a_site_started_by_the_test_kit_sends_nothing_under_notify_socket(
    tmp_path: Path, receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only ``sitebus run`` and ``serve`` speak for the process, not a site in a test suite."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    (tmp_path / "quiet_site_app.py").write_text(
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"
    )
    with running_site({"app": [{"mount": "/", "wsgi": "quiet_site_app:app"}]}, directory=tmp_path):
        pass
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        receiver.recv(4096)


def test_an_unsupported_notify_address_is_a_process_error_quoting_it() -> None:
    with pytest.raises(ProcessError, match=r"NOTIFY_SOCKET='vsock:2:1234' is not supported"):
        notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"})


def test_a_notify_socket_that_is_gone_is_logged_and_the_site_keeps_starting(
    bus: Bus, tmp_path: Path
) -> None:
    logged: list[str] = []
    bus.subscribe("log", lambda message, level, exc: logged.append(message))
    Systemd(bus, environ={"NOTIFY_SOCKET": str(tmp_path / "missing.sock")}).subscribe()
    with bus.running():
        assert bus.state is State.STARTED
    assert any("cannot notify systemd at NOTIFY_SOCKET=" in line for line in logged), logged


@pytest.mark.parametrize(
    ("environ", "seconds"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.2),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.2),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_for_this_pid_only(
    environ: dict[str, str], seconds: float | None
) -> None:
    assert watchdog_interval(environ) == seconds


def test_a_start_that_fails_sends_stopping_as_it_rolls_back(
    bus: Bus, tmp_path: Path, receiver: socket.socket
) -> None:
    Systemd(bus, environ={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}).subscribe()

    def broken() -> None:
        raise OSError("the database does not answer")

    bus.subscribe("start", broken)
    with pytest.raises(StartError):
        bus.start()
    assert receive(receiver) == "STATUS=starting"
    assert receive(receiver) == "STOPPING=1\nSTATUS=stopping"
    assert receive(receiver) == "STATUS=stopped"


def extensions_until(sock: socket.socket, final: str) -> list[str]:
    """The EXTEND_TIMEOUT_USEC datagrams received before ``final``."""
    extensions = []
    while (message := receive(sock)) != final:
        assert message.startswith("EXTEND_TIMEOUT_USEC="), message
        extensions.append(message)
    return extensions


def test_a_slow_start_listener_asks_for_more_time_until_ready(
    tmp_path: Path, receiver: socket.socket
) -> None:
    bus = Bus(listener_timeout=WAIT)
    environ = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    Systemd(bus, SystemdOptions(extend_every=0.05), environ=environ).subscribe()
    slow_done = threading.Event()

    def slow() -> None:
        slow_done.wait(0.5)  # a legitimately slow start: half a second, ten intervals

    bus.subscribe("start", slow)
    bus.start()
    try:
        assert receive(receiver) == "STATUS=starting"
        extensions = extensions_until(receiver, "READY=1\nSTATUS=started")
        assert extensions, "a start ten intervals long asks for more time"
        usec, status = extensions[0].split("\n")
        assert usec == "EXTEND_TIMEOUT_USEC=150000", "three intervals"
        assert status.startswith("STATUS=starting: ") and "slow on 'start'" in status, status
    finally:
        bus.exit()


def test_a_wedged_start_listener_stops_asking_once_past_listener_timeout(
    tmp_path: Path, receiver: socket.socket
) -> None:
    """systemd's own TimeoutStartSec= then ends it: no extension after the bound."""
    bus = Bus(listener_timeout=0.3)
    environ = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    Systemd(bus, SystemdOptions(extend_every=0.05), environ=environ).subscribe()
    began, release = threading.Event(), threading.Event()
    began_at: list[float] = []

    def wedged() -> None:
        began_at.append(time.monotonic())
        began.set()
        release.wait(WAIT)

    bus.subscribe("start", wedged)
    starting = threading.Thread(target=bus.start)
    starting.start()
    try:
        assert began.wait(WAIT)
        assert receive(receiver) == "STATUS=starting"
        assert receive(receiver).startswith("EXTEND_TIMEOUT_USEC="), "slow, within the bound"
        # The passage of time is what is under test: once the listener has run
        # well past the bound (0.3 s), drain what was sent before it...
        assert not release.wait(max(0.0, began_at[0] + 1.5 - time.monotonic()))
        receiver.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                receiver.recv(4096)
        # ...then ten intervals more bring no extension.
        receiver.settimeout(0.5)
        with pytest.raises(TimeoutError):
            message = receiver.recv(4096).decode()
            raise AssertionError(f"sent past the bound: {message!r}")
    finally:
        release.set()
        starting.join(WAIT)
        bus.exit()


def test_running_listener_names_the_start_listener_and_nothing_between(bus: Bus) -> None:
    seen = []

    def opening_database() -> None:
        seen.append(bus.running_listener())

    bus.subscribe("start", opening_database)
    assert bus.running_listener() is None
    with bus.running():
        assert bus.running_listener() is None
    (running,) = seen
    assert running is not None
    channel, name, seconds = running
    assert (channel, seconds >= 0) == ("start", True)
    assert name.endswith("opening_database"), name


def test_a_daemonized_serve_reports_its_main_pid_before_ready(
    tmp_path: Path, receiver: socket.socket
) -> None:
    """``MAINPID=`` from the daemon, so systemd follows it when the launcher exits."""
    pidfile = tmp_path / "site.pid"
    launcher = subprocess.Popen(
        [
            *(sys.executable, "-m", "sitebus", "serve", "hello_app:app"),
            *("--bind", f"unix:{tmp_path / 'h.sock'}", "--daemonize", "--pidfile", str(pidfile)),
        ],
        cwd=CHILDREN,
        env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
    )
    try:
        assert receive(receiver) == "STATUS=starting"
        mainpid = receive(receiver)
        assert receive(receiver) == "READY=1\nSTATUS=started"
        assert launcher.wait(WAIT) == 0
        daemon = read_running_pid(pidfile)
        assert daemon is not None and daemon != launcher.pid
        assert mainpid == f"MAINPID={daemon}"
        os.kill(daemon, signal.SIGTERM)
        assert receive(receiver) == "STOPPING=1\nSTATUS=stopping"
    finally:
        launcher.kill()
        launcher.wait(WAIT)
        daemon = read_running_pid(pidfile)
        if daemon is not None:
            os.kill(daemon, signal.SIGKILL)


def test_watchdog_interval_accepts_the_pid_a_daemon_took_over_from() -> None:
    environ = {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "4242"}
    assert watchdog_interval(environ) is None
    assert watchdog_interval(environ, replaced_pid=4242) == 0.2


def test_notify_sends_descriptors_with_the_message(tmp_path: Path, receiver: socket.socket) -> None:
    """FDSTORE=1 carries its descriptor as SCM_RIGHTS, as sd_pid_notify_with_fds does."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        environ = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        assert notify("FDSTORE=1\nFDNAME=web", environ, fds=[listener.fileno()])
        receiver.settimeout(WAIT)
        data, fds, _, _ = socket.recv_fds(receiver, 4096, 4)
        assert data == b"FDSTORE=1\nFDNAME=web" and len(fds) == 1
        with socket.socket(fileno=fds[0]) as received:
            assert received.getsockname() == listener.getsockname()


@pytest.mark.parametrize(
    ("fdstore", "offered"), [("4", True), ("0", False), ("", False), ("many", False)]
)
def test_the_fd_store_is_used_only_where_systemd_offers_one(
    bus: Bus, tmp_path: Path, receiver: socket.socket, fdstore: str, offered: bool
) -> None:
    environ = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "FDSTORE": fdstore}
    plugin = Systemd(bus, environ=environ)
    plugin.subscribe()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert bus.publish("listening", "sitebus-bind=x", listener) == [offered]
        bus.publish("stale_listener", "sitebus-bind=y")
    receiver.setblocking(False)
    if offered:
        data, fds, _, _ = socket.recv_fds(receiver, 4096, 4)
        assert data == b"FDSTORE=1\nFDNAME=sitebus-bind=x"
        for fd in fds:
            os.close(fd)
        assert receiver.recv(4096) == b"FDSTOREREMOVE=1\nFDNAME=sitebus-bind=y"
    with pytest.raises(BlockingIOError):
        receiver.recv(4096)
    plugin.unsubscribe()


def test_a_socket_the_fd_store_refuses_is_logged_and_not_counted_as_kept(
    bus: Bus, tmp_path: Path
) -> None:
    logged: list[str] = []
    bus.subscribe("log", lambda message, level, exc: logged.append(message))
    environ = {"NOTIFY_SOCKET": str(tmp_path / "missing.sock"), "FDSTORE": "4"}
    Systemd(bus, environ=environ).subscribe()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert bus.publish("listening", "sitebus-bind=x", listener) == [False]
    assert logged[0].startswith("Not kept in the FD store: sitebus-bind=x: cannot notify"), logged
