"""Listening sockets the bus owns: parsing, binding, adopting, handing over, holding off."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sitebus import Bus, StartError, State, _handover
from sitebus.errors import BindError
from sitebus.servers import Sockets, SocketsOptions, parse_address
from sitebus.servers._holdoff import hold_off_syn


@pytest.mark.parametrize(
    ("spec", "kind", "host", "port", "path", "fd"),
    [
        ("127.0.0.1:8080", "tcp", "127.0.0.1", 8080, "", -1),
        ("localhost:0", "tcp", "localhost", 0, "", -1),
        (":80", "tcp", "", 80, "", -1),
        ("[::1]:443", "tcp", "::1", 443, "", -1),
        ("unix:/run/site.sock", "unix", "", 0, "/run/site.sock", -1),
        ("fd://3", "fd", "", 0, "", 3),
    ],
)
def test_parse_address_forms(
    spec: str, kind: str, host: str, port: int, path: str, fd: int
) -> None:
    address = parse_address(spec)
    assert (address.kind, address.host, address.port, address.path, address.fd) == (
        kind,
        host,
        port,
        path,
        fd,
    )
    assert str(address) == spec


@pytest.mark.parametrize(
    "spec", ["8080", "localhost", "host:http", "host:65536", "::1:80", "[::1]80", "unix:", "fd://x"]
)
def test_malformed_address_is_one_line_quoting_it(spec: str) -> None:
    with pytest.raises(BindError) as caught:
        parse_address(spec)
    message = str(caught.value)
    assert f'"{spec}"' in message and "HOST:PORT" in message and "\n" not in message


def test_sockets_bind_at_start_and_close_at_stop(bus: Bus) -> None:
    sockets = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0", "[::1]:0")))
    sockets.subscribe()
    bus.start()
    tcp, tcp6 = (listener.socket for listener in sockets.listeners)
    assert tcp.family == socket.AF_INET and tcp6.family == socket.AF_INET6
    port = tcp.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    bus.stop()
    assert tcp.fileno() == -1 and tcp6.fileno() == -1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def _start_error(bus: Bus, spec: str) -> BindError:
    Sockets(bus, SocketsOptions(binds=("127.0.0.1:0", spec))).subscribe()
    with pytest.raises(StartError) as caught:
        bus.start()
    assert bus.state is State.STOPPED, "a failed bind rolls the start back"
    cause = caught.value.__cause__
    assert isinstance(cause, BindError)
    assert f'"{spec}"' in str(cause) and "\n" not in str(cause)
    return cause


def test_address_in_use_fails_start_naming_the_address(bus: Bus) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        spec = f"127.0.0.1:{taken.getsockname()[1]}"
        assert "address already in use" in str(_start_error(bus, spec))


def test_unknown_host_fails_start_naming_the_host(bus: Bus) -> None:
    assert 'unknown host "no-such-host.invalid"' in str(
        _start_error(bus, "no-such-host.invalid:80")
    )


def test_unix_socket_replaces_a_stale_file_and_sets_its_mode(bus: Bus, tmp_path: Path) -> None:
    path = tmp_path / "site.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays behind, nobody listening
    sockets = Sockets(bus, SocketsOptions(binds=(f"unix:{path}",), unix_mode=0o660))
    sockets.subscribe()
    bus.start()
    assert path.stat().st_mode & 0o777 == 0o660
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
    bus.stop()
    assert not path.exists(), "the socket file is removed at stop"


def test_unix_socket_in_use_or_not_a_socket_is_refused(bus: Bus, tmp_path: Path) -> None:
    path = tmp_path / "site.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        assert "another process is listening" in str(_start_error(bus, f"unix:{path}"))
    regular = tmp_path / "file"
    regular.write_text("data")
    assert "is not a socket" in str(_start_error(Bus(listener_timeout=5), f"unix:{regular}"))
    assert regular.read_text() == "data"


def test_inherited_descriptor_is_adopted_and_closed_at_stop(bus: Bus) -> None:
    with socket.create_server(("127.0.0.1", 0)) as original:
        fd = os.dup(original.fileno())
        sockets = Sockets(bus, SocketsOptions(binds=(f"fd://{fd}",)))
        sockets.subscribe()
        bus.start()
        adopted = sockets.listeners[0].socket
        assert adopted.fileno() == fd
        assert adopted.getsockname() == original.getsockname()
        bus.stop()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_inherited_descriptor_that_does_not_listen_is_refused(bus: Bus) -> None:
    read_fd, write_fd = os.pipe()
    try:
        assert "not a listening socket" in str(_start_error(bus, f"fd://{read_fd}"))
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_handed_over_socket_is_adopted_instead_of_bound(bus: Bus) -> None:
    """What a re-exec does: the hand-over names the descriptor of each configured address."""
    with socket.create_server(("127.0.0.1", 0)) as original:
        fd = os.dup(original.fileno())
        _handover.put("sockets", [["127.0.0.1:0", fd]], [fd])
        sockets = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",)))
        sockets.subscribe()
        bus.start()
        assert _handover.ENV not in os.environ, "the record is consumed"
        assert sockets.listeners[0].socket.fileno() == fd
        assert sockets.listeners[0].socket.getsockname() == original.getsockname()
        bus.stop()


def test_two_sockets_plugins_with_the_same_spec_each_get_their_own_back(bus: Bus) -> None:
    """Two plugins may both bind 127.0.0.1:0: each claims, in start order, its own."""
    first_plugin = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",)))
    second_plugin = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",)))
    first_plugin.subscribe()
    second_plugin.subscribe()
    bus.start()
    names = [p.listeners[0].socket.getsockname() for p in (first_plugin, second_plugin)]
    bus._restarting = True  # what block() sets before the restart's teardown
    bus.stop()
    bus._restarting = False
    bus.start()
    assert [p.listeners[0].socket.getsockname() for p in (first_plugin, second_plugin)] == names
    bus.stop()


def test_hold_off_drops_new_handshakes_but_keeps_the_queue() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        address = listener.getsockname()
        queued = socket.create_connection(address, timeout=5)
        queued.sendall(b"ping")
        assert hold_off_syn(listener)
        late = socket.socket()
        late.settimeout(0.3)
        with pytest.raises(TimeoutError):
            late.connect(address)
        late.close()
        conn, _ = listener.accept()
        assert conn.recv(4) == b"ping"
        conn.sendall(b"pong")
        assert queued.recv(4) == b"pong"
        conn.close()
        queued.close()
