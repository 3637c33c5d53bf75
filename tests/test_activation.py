"""Socket activation and the FD store: descriptors passed exactly as systemd passes them.

The subprocess tests start the site through ``children/activate.py``, which
puts the test's listening sockets at descriptors 3, 4, ... and sets
``LISTEN_FDS``/``LISTEN_PID``/``LISTEN_FDNAMES`` before it execs the site
(so ``LISTEN_PID`` is the site's own PID); readiness is the site's
``READY=1`` on a notify socket the test binds, as systemd's.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import CHILDREN, WAIT, Child
from sitebus import Bus, StartError
from sitebus.errors import BindError, ConfigError
from sitebus.servers import Sockets, SocketsOptions, _activation
from sitebus.servers._activation import read, store_name
from sitebus.site.config import load_table
from test_servers import get
from test_systemd import receive

Spawn = Callable[..., Child]


# -- helpers -----------------------------------------------------------------


def listening_socket() -> socket.socket:
    return socket.create_server(("127.0.0.1", 0), backlog=128)


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds, from /proc."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                found.add(int(target[len("socket:[") : -1]))
    return found


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def activate(
    spawn: Spawn,
    socks: list[socket.socket],
    args: list[str],
    *,
    names: list[str] | None = None,
    env: dict[str, str] | None = None,
    fds: list[int] | None = None,
) -> Child:
    """Start ``python -u args`` with ``socks`` (or raw ``fds``) passed as systemd passes them."""
    child_env = dict(env or {})
    if names is not None:
        child_env["LISTEN_FDNAMES"] = ":".join(names)
    passed = fds if fds is not None else [sock.fileno() for sock in socks]
    launcher = [str(CHILDREN / "activate.py"), ",".join(map(str, passed))]
    return spawn([*launcher, *args], env=child_env, pass_fds=tuple(passed), cwd=CHILDREN)


def site_file(tmp_path: Path, servers: list[str]) -> Path:
    """A site file with the ``[[server]]`` tables given as TOML lines, serving activation_app."""
    path = tmp_path / "site.toml"
    tables = "".join(f"[[server]]\n{server}\n\n" for server in servers)
    path.write_text(tables + '[[app]]\nmount = "/"\nwsgi = "activation_app:app"\n')
    return path


def wait_ready(receiver: socket.socket, child: Child) -> None:
    while (message := receive(receiver, child=child)) != "READY=1\nSTATUS=started":
        assert "STOPPING=1" not in message, child.output()


class ClientLoop:
    """Requests on a new connection each, one after the other, until stopped; counts failures."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answered = 0
        self.failures: list[str] = []
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _ = get(self.port)
                outcome = None if status == 200 else f"status {status}"
            except OSError as exc:
                outcome = repr(exc)
            with self.changed:
                if outcome is None:
                    self.answered += 1
                else:
                    self.failures.append(outcome)
                self.changed.notify_all()

    def wait_answers(self, more: int) -> None:
        """Wait until ``more`` further requests were answered."""
        with self.changed:
            target = self.answered + more
            assert self.changed.wait_for(lambda: self.answered >= target, WAIT), self.failures

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT)


def still_queues(sock: socket.socket) -> None:
    """A new connection to ``sock`` completes (no SYN filter) and waits in its queue."""
    with socket.create_connection(sock.getsockname(), timeout=WAIT):
        sock.settimeout(WAIT)
        accepted, _ = sock.accept()
        accepted.close()


# -- parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "2"}, [(3, "unknown"), (4, "unknown")]),
        (
            {"LISTEN_PID": "{pid}", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:shop.socket"},
            [(3, "web"), (4, "shop.socket")],
        ),
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "0", "LISTEN_FDNAMES": ""}, []),
        ({"LISTEN_PID": "1", "LISTEN_FDS": "2"}, []),
        ({"LISTEN_FDS": "2"}, []),
        ({}, []),
    ],
)
def test_listen_variables_are_read_only_for_this_pid(
    environ: dict[str, str], expected: list[tuple[int, str]]
) -> None:
    filled = {key: value.format(pid=os.getpid()) for key, value in environ.items()}
    assert [(p.fd, p.name) for p in read(filled, os.getpid())] == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LISTEN_FDS": "two"}, "LISTEN_FDS='two' is not a number of descriptors: expected 0 to"),
        ({"LISTEN_FDS": "-1"}, "LISTEN_FDS='-1' is not a number of descriptors"),
        ({"LISTEN_FDS": ""}, "LISTEN_FDS='' is not a number of descriptors"),
        (
            {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web"},
            "LISTEN_FDNAMES='web' names 1 descriptor(s), but LISTEN_FDS=2 passes 2: "
            "expected one name for each",
        ),
        (
            {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
            "LISTEN_FDNAMES='a:b' names 2 descriptor(s), but LISTEN_FDS=1 passes 1",
        ),
    ],
)
def test_malformed_listen_variables_are_one_line_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(BindError) as caught:
        read({"LISTEN_PID": str(os.getpid()), **environ}, os.getpid())
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("127.0.0.1:8080", "sitebus-bind=127.0.0.1%3A8080"),
        ("[::1]:0", "sitebus-bind=[%3A%3A1]%3A0"),
        ("unix:/run/shop 50%.sock", "sitebus-bind=unix%3A/run/shop 50%25.sock"),
        ("unix:/run/café\n", "sitebus-bind=unix%3A/run/caf%C3%A9%0A"),
        ("fd://3", "sitebus-bind=fd%3A//3"),
    ],
)
def test_store_names_are_valid_fdnames_that_name_one_spec(spec: str, name: str) -> None:
    assert store_name(spec) == name
    assert all(" " <= char <= "~" and char != ":" for char in name)


def test_a_store_name_too_long_for_systemd_is_a_hash_of_the_spec() -> None:
    spec = "unix:/" + "x" * 300
    name = store_name(spec)
    assert len(name) <= 255 and name.startswith("sitebus-bind=sha256-")
    assert name == store_name(spec) != store_name(spec + "y")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a:b", "holds ':'"),
        ("", "is empty"),
        ("x" * 256, "is 256 characters long: at most 255"),
        ("café", "not printable ASCII"),
        ("sitebus-bind=web", "names the sockets a site stores itself"),
    ],
)
def test_server_name_must_be_a_file_descriptor_name(name: str, problem: str) -> None:
    table = {"server": [{"name": name}], "app": [{"mount": "/", "wsgi": "a:b"}]}
    with pytest.raises(ConfigError) as caught:
        load_table(table)
    message = str(caught.value)
    assert "server[0].name" in message and problem in message, message
    if name:  # SocketsOptions' default "" means no name
        with pytest.raises(ConfigError, match=r"^SocketsOptions\.name: "):
            SocketsOptions(name=name)


def test_a_descriptor_that_is_not_a_socket_is_one_bind_error_line(bus: Bus) -> None:
    read_end, write_end = os.pipe()
    try:
        sockets = Sockets(bus, SocketsOptions(binds=(f"fd://{read_end}",)))
        sockets.subscribe()
        with pytest.raises(StartError) as caught:
            bus.start()
        text = str(caught.value)
        assert f'Cannot adopt "fd://{read_end}": descriptor {read_end} is not a listening' in text
    finally:
        os.close(read_end)
        os.close(write_end)


# -- the pool, in this process -------------------------------------------------


@pytest.fixture
def pass_to_self(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., list[int]]]:
    """Pass sockets to this process as systemd would, at free consecutive descriptors.

    Descriptors 3, 4, ... are taken in a test process: the pool starts
    higher here, which is all that differs.
    """
    placed: list[int] = []

    def pass_sockets(socks: list[socket.socket], names: list[str] | None = None) -> list[int]:
        first = 1000
        while any(_is_open(first + i) for i in range(len(socks))):
            first += len(socks)
        for index, sock in enumerate(socks):
            os.dup2(sock.fileno(), first + index)
            placed.append(first + index)
        monkeypatch.setattr(_activation, "FIRST_FD", first)
        monkeypatch.setattr(_activation, "_pool", None)
        monkeypatch.setattr(_activation, "_error", None)
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
        monkeypatch.setenv("LISTEN_FDS", str(len(socks)))
        if names is not None:
            monkeypatch.setenv("LISTEN_FDNAMES", ":".join(names))
        return placed[-len(socks) :]

    yield pass_sockets
    for fd in placed:
        with contextlib.suppress(OSError):
            os.close(fd)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def logged(bus: Bus) -> list[str]:
    lines: list[str] = []
    bus.subscribe("log", lambda message, level, exc: lines.append(message))
    return lines


def test_binds_adopt_by_stored_name_then_server_name_then_order(
    bus: Bus, pass_to_self: Callable[..., list[int]]
) -> None:
    """Stored under its own spec, then the server's name, then the unnamed ones in order."""
    socks = [listening_socket() for _ in range(4)]
    names = ["shop.socket", "web", store_name("127.0.0.1:3"), "web"]
    fds = pass_to_self(socks, names)
    try:
        lines = logged(bus)
        first = Sockets(bus, SocketsOptions(binds=("127.0.0.1:1", "127.0.0.1:2"), name="web"))
        second = Sockets(bus, SocketsOptions(binds=("127.0.0.1:3", "127.0.0.1:4")))
        first.subscribe()
        second.subscribe()
        assert "LISTEN_FDS" not in os.environ, "read and removed when the plugin is made"
        bus.start()
        got = [listener.socket.fileno() for s in (first, second) for listener in s.listeners]
        assert got == [fds[1], fds[3], fds[2], fds[0]]
        origins = [listener.origin for s in (first, second) for listener in s.listeners]
        assert origins == ["activated", "activated", "stored", "activated"]
        assert f"(descriptor {fds[2]}, named '{names[2]}')" in "\n".join(lines)
        bus.stop()
        for sock in socks:
            still_queues(sock)  # systemd's copies: still listening, no SYN filter
    finally:
        for sock in socks:
            sock.close()


def test_what_no_bind_claims_is_closed_at_started_and_stale_stored_ones_forgotten(
    bus: Bus, pass_to_self: Callable[..., list[int]]
) -> None:
    socks = [listening_socket() for _ in range(3)]
    stale = store_name("127.0.0.1:9")
    fds = pass_to_self(socks, ["web", "other", stale])
    forgotten: list[str] = []
    try:
        lines = logged(bus)
        bus.subscribe("stale_listener", forgotten.append)
        Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",), name="web")).subscribe()
        bus.start()
        assert not _is_open(fds[1]) and not _is_open(fds[2])
        warnings = [line for line in lines if line.startswith("Closing descriptor")]
        assert warnings == [
            f"Closing descriptor {fds[1]} (named 'other') that systemd passed: "
            "no bind of the site claims it",
            f"Closing descriptor {fds[2]} (named '{stale}') that systemd passed: "
            "no bind of the site claims it",
        ]
        assert forgotten == [stale], "only what a site stored is removed from the store"
        bus.stop()
    finally:
        for sock in socks:
            sock.close()


def test_a_bound_listener_kept_by_a_listening_listener_is_not_held_off(bus: Bus) -> None:
    """What the FD store does: systemd keeps a copy, so a stop leaves the socket accepting."""
    kept: list[socket.socket] = []

    def store(name: str, sock: socket.socket) -> bool:
        assert name == store_name("127.0.0.1:0")
        kept.append(sock.dup())
        return True

    bus.subscribe("listening", store)
    sockets = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",)))
    sockets.subscribe()
    bus.start()
    try:
        assert sockets.listeners[0].origin == "stored"
        sockets.hold_off()  # what a server's stop does first
        assert sockets.wait_drained(0.0)
        bus.stop()
        still_queues(kept[0])
    finally:
        kept[0].close()


def test_an_address_written_anew_adopts_its_stored_socket_instead_of_failing(
    bus: Bus, pass_to_self: Callable[..., list[int]]
) -> None:
    """Stored as ``localhost:P``, now written ``127.0.0.1:P``: the stored socket holds it."""
    with listening_socket() as sock:
        port = port_of(sock)
        fds = pass_to_self([sock], [store_name(f"localhost:{port}")])
        forgotten: list[str] = []
        bus.subscribe("stale_listener", forgotten.append)
        sockets = Sockets(bus, SocketsOptions(binds=(f"127.0.0.1:{port}",)))
        sockets.subscribe()
        bus.start()
        assert sockets.listeners[0].socket.fileno() == fds[0]
        assert sockets.listeners[0].origin == "stored"
        assert forgotten == []
        bus.stop()
        still_queues(sock)


def test_a_malformed_pool_fails_the_start_with_its_line(
    bus: Bus, pass_to_self: Callable[..., list[int]]
) -> None:
    socks = [listening_socket(), listening_socket()]
    pass_to_self(socks, ["web"])
    try:
        Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",))).subscribe()
        with pytest.raises(StartError, match=r"LISTEN_FDNAMES='web' names 1 descriptor\(s\)"):
            bus.start()
    finally:
        for sock in socks:
            sock.close()


# -- real processes --------------------------------------------------------------


def test_named_sockets_go_to_their_servers_and_survive_a_sighup(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket
) -> None:
    """Matched by FileDescriptorName=; the same sockets across a re-exec; systemd's after a stop."""
    site = site_file(
        tmp_path,
        [
            f'name = "a"\nengine = "wsgiref"\nbind = "unix:{tmp_path / "a.sock"}"',
            f'name = "b"\nengine = "cheroot"\nbind = "unix:{tmp_path / "b.sock"}"',
        ],
    )
    with listening_socket() as sock_a, listening_socket() as sock_b:
        child = activate(
            spawn,
            [sock_b, sock_a],
            ["-m", "sitebus", "run", str(site)],
            names=["b", "a"],
            env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
        )
        wait_ready(receiver, child)
        pid = child.pid
        assert get(port_of(sock_a)) == (200, f"hello {pid}".encode())
        assert get(port_of(sock_b)) == (200, f"hello {pid}".encode())
        assert get(port_of(sock_a), "/env") == (200, b""), "LISTEN_* are gone from os.environ"
        log = child.stderr()
        assert f"wsgiref serving on http://127.0.0.1:{port_of(sock_a)}" in log
        assert f"cheroot serving on http://127.0.0.1:{port_of(sock_b)}" in log
        assert not (tmp_path / "a.sock").exists() and not (tmp_path / "b.sock").exists()

        with ClientLoop(port_of(sock_a)) as clients:
            clients.wait_answers(3)
            child.signal(signal.SIGHUP)
            wait_ready(receiver, child)
            clients.wait_answers(3)
        assert clients.failures == []
        assert {inode(sock_a), inode(sock_b)} <= socket_inodes(pid), "the same sockets"
        assert get(port_of(sock_b), "/env") == (200, b"")

        child.signal(signal.SIGTERM)
        assert child.wait() == 0, child.output()
        still_queues(sock_a)
        still_queues(sock_b)


@pytest.mark.parametrize("names", [None, ["shop.socket", "shop.socket", "shop.socket"]])
def test_unnamed_sockets_go_to_the_binds_in_order_and_the_rest_is_closed(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket, names: list[str] | None
) -> None:
    socks = [listening_socket() for _ in range(3)]
    try:
        binds = ["--bind", "127.0.0.1:1", "--bind", "127.0.0.1:2"]
        child = activate(
            spawn,
            socks,
            ["-m", "sitebus", "serve", "activation_app:app", "--engine", "wsgiref", *binds],
            names=names,
            env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
        )
        wait_ready(receiver, child)
        assert get(port_of(socks[0]))[0] == 200 and get(port_of(socks[1]))[0] == 200
        child.signal(signal.SIGTERM)
        assert child.wait() == 0, child.output()
        log = child.stderr()
        first = log.index(f"serving on http://127.0.0.1:{port_of(socks[0])}")
        assert log.index(f"serving on http://127.0.0.1:{port_of(socks[1])}") > first
        name = "unknown" if names is None else "shop.socket"
        assert f"Closing descriptor 5 (named '{name}') that systemd passed" in log
    finally:
        for sock in socks:
            sock.close()


def test_serve_name_adopts_the_socket_named_for_it_before_unnamed_ones(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket
) -> None:
    """``serve --name web`` takes the socket a unit passes as ``FileDescriptorName=web``."""
    unnamed, named = listening_socket(), listening_socket()
    try:
        child = activate(
            spawn,
            [unnamed, named],
            [
                "-m",
                "sitebus",
                "serve",
                "activation_app:app",
                "--name",
                "web",
                "--bind",
                "127.0.0.1:1",
            ],
            names=["shop.socket", "web"],
            env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
        )
        wait_ready(receiver, child)
        assert get(port_of(named))[0] == 200
        child.signal(signal.SIGTERM)
        assert child.wait() == 0, child.output()
        assert "Closing descriptor 3 (named 'shop.socket') that systemd passed" in child.stderr()
    finally:
        unnamed.close()
        named.close()


def test_serve_refuses_a_name_systemd_would_not_take() -> None:
    serve = [sys.executable, "-m", "sitebus", "serve", "app:app", "--name", "a:b"]
    done = subprocess.run(serve, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 2
    assert "argument --name: 'a:b' holds ':'" in done.stderr, done.stderr


def test_a_master_adopts_the_passed_socket_and_its_workers_serve_it(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket
) -> None:
    """``--workers 2`` under socket activation: the master adopts, the workers accept."""
    with listening_socket() as sock:
        serve = ["-m", "sitebus", "serve", "activation_app:app", "--bind", "127.0.0.1:1"]
        child = activate(
            spawn,
            [sock],
            [*serve, "--workers", "2"],
            env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
        )
        wait_ready(receiver, child)
        answers = {get(port_of(sock)) for _ in range(100)}
        pids = {int(body.split()[1]) for _, body in answers}
        assert {status for status, _ in answers} == {200}
        assert child.pid not in pids and 1 <= len(pids) <= 2
        assert get(port_of(sock), "/env") == (200, b""), "the workers never see LISTEN_*"
        child.signal(signal.SIGTERM)
        assert child.wait() == 0, child.output()
        assert "by socket activation" in child.stderr()
        still_queues(sock)


def test_sockets_for_another_pid_are_left_and_the_site_binds_as_configured(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket
) -> None:
    where = tmp_path / "h.sock"
    with listening_socket() as sock:
        child = activate(
            spawn,
            [sock],
            ["-m", "sitebus", "serve", "activation_app:app", "--bind", f"unix:{where}"],
            env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "SITEBUS_TEST_LISTEN_PID": "1"},
        )
        wait_ready(receiver, child)
        conn = http.client.HTTPConnection("localhost", timeout=WAIT)
        conn.sock = socket.socket(socket.AF_UNIX)
        conn.sock.connect(str(where))
        conn.request("GET", "/env")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b""), "removed, though not ours"
        conn.close()
        child.signal(signal.SIGTERM)
        assert child.wait() == 0, child.output()
        assert "Adopted" not in child.stderr()


@pytest.mark.parametrize("kind", ["pipe", "names"])
def test_a_bad_pass_ends_the_command_with_one_line(spawn: Spawn, kind: str) -> None:
    read_end, write_end = os.pipe()
    try:
        with listening_socket() as sock:
            serve = ["-m", "sitebus", "serve", "activation_app:app", "--bind", "127.0.0.1:0"]
            if kind == "pipe":
                child = activate(spawn, [], serve, fds=[read_end])
                expected = 'Cannot adopt "127.0.0.1:0": descriptor 3 is not a listening socket'
            else:
                child = activate(spawn, [sock, sock], serve, names=["web"])
                expected = "LISTEN_FDNAMES='web' names 1 descriptor(s), but LISTEN_FDS=2"
            assert child.wait() == 1, child.output()
    finally:
        os.close(read_end)
        os.close(write_end)
    err = child.stderr()
    assert f"sitebus: error: {expected}" in err, err
    assert "Traceback" not in err


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate is not installed (Debian: the systemd package)",
)
def test_systemd_socket_activate_starts_the_site_on_its_named_socket(tmp_path: Path) -> None:
    """systemd's own tool: it listens, and on the first connection execs the site."""
    with listening_socket() as probe:
        port = port_of(probe)  # free now; systemd-socket-activate binds it next
    site = site_file(tmp_path, ['name = "web"\nengine = "wsgiref"\nbind = "127.0.0.1:1"'])
    src = Path(__file__).parent.parent / "src"
    command = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=web"]
    command += ["-E", f"PYTHONPATH={CHILDREN}{os.pathsep}{src}", "-E", "PYTHONDONTWRITEBYTECODE=1"]
    command += [sys.executable, "-m", "sitebus", "run", str(site)]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    output = Output(process)
    try:
        output.wait_for(f"Listening on 127.0.0.1:{port}")
        assert get(port) == (200, f"hello {process.pid}".encode()), "exec'd: the same PID"
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0, output.text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
        output.close()
    expected = f'Adopted http://127.0.0.1:{port} for "127.0.0.1:1" by socket activation'
    assert expected in output.text()


class Output:
    """A process's stderr, read by a thread, with a wait for a line that holds some text."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            with self._changed:
                self._lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()

    def wait_for(self, text: str) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: any(text in line for line in self._lines), WAIT)
        assert found, f"no line with {text!r} within {WAIT} s:\n{self.text()}"

    def text(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def close(self) -> None:
        self._thread.join(WAIT)
        self._stream.close()


class Manager:
    """systemd's side of the notify socket, with an FD store: keeps what FDSTORE=1 sends.

    Like systemd, it keeps one copy of a socket however often it is sent.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stored: list[tuple[str, socket.socket]] = []
        self.removed: list[str] = []

    def receive(self, child: Child) -> str:
        self.sock.settimeout(WAIT)
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 4096, 16)
        except TimeoutError:
            raise AssertionError(f"no notify message within {WAIT} s\n{child.output()}") from None
        message = data.decode()
        fields = dict(line.split("=", 1) for line in message.split("\n") if "=" in line)
        for fd in fds:
            known = {inode(sock) for _, sock in self.stored}
            if fields.get("FDSTORE") == "1" and os.fstat(fd).st_ino not in known:
                self.stored.append((fields.get("FDNAME", "stored"), socket.socket(fileno=fd)))
            else:
                os.close(fd)
        if fields.get("FDSTOREREMOVE") == "1":
            self.removed.append(fields["FDNAME"])
        return message

    def wait_for(self, child: Child, first_line: str) -> None:
        while self.receive(child).split("\n")[0] != first_line:
            pass

    def close(self) -> None:
        for _, sock in self.stored:
            sock.close()


def test_the_fd_store_carries_the_sockets_across_a_restart_without_a_failed_request(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket
) -> None:
    """``systemctl restart`` with FileDescriptorStoreMax=: stop, then start with what was stored."""
    site = site_file(tmp_path, ['engine = "wsgiref"\nbind = "127.0.0.1:0"'])
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "FDSTORE": "4"}
    run = ["-m", "sitebus", "run", str(site)]
    manager = Manager(receiver)
    try:
        first = spawn(run, env=env, cwd=CHILDREN)
        manager.wait_for(first, "READY=1")
        name = store_name("127.0.0.1:0")
        assert [stored_name for stored_name, _ in manager.stored] == [name]
        stored = manager.stored[0][1]
        port = port_of(stored)
        with listening_socket() as stale, ClientLoop(port) as clients:
            clients.wait_answers(3)
            first.signal(signal.SIGTERM)
            assert first.wait() == 0, first.output()
            # Stored by an earlier run for a bind the site file has no more.
            names = [name, store_name("127.0.0.1:9")]
            second = activate(spawn, [stored, stale], run, names=names, env=env)
            manager.wait_for(second, "READY=1")
            clients.wait_answers(3)
            if not manager.removed:
                manager.wait_for(second, "FDSTOREREMOVE=1")
        assert clients.failures == []
        assert first.pid != second.pid
        expected = f'Adopted http://127.0.0.1:{port} for "127.0.0.1:0" from the FD store'
        assert expected in second.stderr()
        assert inode(stored) in socket_inodes(second.pid), "not bound again: the same socket"
        assert manager.removed == [names[1]]
        assert len(manager.stored) == 1
        second.signal(signal.SIGTERM)
        assert second.wait() == 0, second.output()
        still_queues(stored)
    finally:
        manager.close()


def test_passed_sockets_alone_mean_systemd_started_the_process(
    pass_to_self: Callable[..., list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sitebus run`` and ``serve`` subscribe the Systemd plugin on LISTEN_FDS too."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with listening_socket() as sock:
        pass_to_self([sock])
        assert _activation.under_systemd()
        assert _activation.under_systemd(), "read once, still known"
        for passed in _activation.take_unclaimed():
            os.close(passed.fd)
