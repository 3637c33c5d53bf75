"""Restarts (SIGHUP re-exec) and exits in real processes: the hand-over, lost signals, refusals."""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CHILDREN, WAIT, Child
from sitebus import Bus, State, _handover
from sitebus.plugins.signals import Signals
from sitebus.servers import Sockets, SocketsOptions
from test_serve import slow_clients
from test_servers import get

Spawn = Callable[..., Child]
SRC = Path(__file__).parent.parent / "src"


def serve_steps(spawn: Spawn, *extra: str, engine: str = "wsgiref") -> tuple[Child, int]:
    """``sitebus serve`` reporting its log's steps, on a free loopback port.

    ``extra`` goes after the serve arguments, except ``--as-nobody`` (first).
    """
    nobody = [arg for arg in extra if arg == "--as-nobody"]
    args = [str(CHILDREN / "serve_steps.py"), *nobody, "hello_app:app"]
    args += ["--bind", "127.0.0.1:0", "--engine", engine]
    args += [arg for arg in extra if arg != "--as-nobody"]
    child = spawn(args, cwd=CHILDREN)
    line = child.expect(f"{engine} serving on http://127.0.0.1:")
    return child, int(line.rsplit(":", 1)[1])


def test_two_sockets_plugins_on_two_ports_survive_a_sighup(spawn: Spawn) -> None:
    """Each Sockets plugin hands its listener over; the new image answers on both ports."""
    child = spawn([str(CHILDREN / "two_sockets_site.py")])
    _, _, pid, first, second = child.expect("serving 0").split()
    assert get(int(first)) == (200, f"hello {pid}".encode())
    assert get(int(second)) == (200, f"second {pid}".encode())
    child.signal(signal.SIGHUP)
    assert child.expect("serving 1").split()[2:] == [pid, first, second], "same PID, same ports"
    assert get(int(first)) == (200, f"hello {pid}".encode())
    assert get(int(second)) == (200, f"second {pid}".encode())
    child.signal(signal.SIGTERM)
    child.expect("exited 0")
    assert child.wait() == 0, child.output()


def test_handed_over_socket_nobody_claims_is_closed_once_the_bus_started(bus: Bus) -> None:
    """A changed configuration must not leave a listening socket that nobody accepts on."""
    with socket.create_server(("127.0.0.1", 0)) as original:
        kept, dropped = os.dup(original.fileno()), os.dup(original.fileno())
        _handover.put("sockets", [["127.0.0.1:0", kept], ["127.0.0.1:1", dropped]], [kept, dropped])
        sockets = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",)))
        sockets.subscribe()
        bus.start()
        assert sockets.listeners[0].socket.fileno() == kept
        os.fstat(dropped)  # still open while plugins may claim it
        bus.request_exit()
        assert bus.block() == 0
    with pytest.raises(OSError):
        os.fstat(dropped)
    assert _handover.take("sockets") is None


def test_handover_record_of_another_process_is_ignored_and_dropped() -> None:
    """A child that merely inherited the environment must not take descriptors not its own."""
    _handover.put("sockets", [["127.0.0.1:0", 1234]])
    os.environ[_handover.ENV] = os.environ[_handover.ENV].replace(
        f'"pid":{os.getpid()}', f'"pid":{os.getpid() + 1}'
    )
    assert _handover.take("sockets") is None
    assert _handover.ENV not in os.environ


def test_repeated_sigterm_while_stopping_coalesces_and_requests_complete(spawn: Spawn) -> None:
    """Supervisors send SIGTERM more than once: the stop must not cut requests in flight."""
    child, port = serve_steps(spawn)
    threads, results = slow_clients(port, 4, "/slow?1500")
    for _ in threads:
        child.expect("slow")
    child.signal(signal.SIGTERM)
    child.expect("Bus stopping")
    child.signal(signal.SIGTERM)
    for thread in threads:
        thread.join(WAIT)
    assert results == [200] * 4, child.output()
    child.expect("exited 0")
    assert child.wait() == 0, child.output()
    assert "exiting now" not in child.stderr()


@pytest.mark.parametrize("engine", ["wsgiref", "cheroot", "waitress", "uvicorn"])
def test_second_sigint_while_stopping_still_exits_at_once(spawn: Spawn, engine: str) -> None:
    """A person pressing Ctrl-C again gives up on the requests in flight, and the
    process really ends: no engine thread holds the interpreter open."""
    child, port = serve_steps(spawn, engine=engine)
    threads, _ = slow_clients(port, 1, "/slow?600000")
    child.expect("slow")
    child.signal(signal.SIGINT)
    child.expect("Bus stopping")
    child.signal(signal.SIGINT)
    child.expect("exited 1")
    assert child.wait() == 1, child.output()
    assert "Second exit request while stopping: exiting now" in child.stderr()
    threads[0].join(WAIT)


@pytest.mark.parametrize("when", ["at the re-exec", "0-120 ms after the SIGHUP"])
def test_sigterm_during_a_sighup_restart_is_never_lost(spawn: Spawn, when: str) -> None:
    """Wherever the SIGTERM lands in the restart, the process ends with status 0."""
    rounds = 6
    for _ in range(rounds):
        child, _ = serve_steps(spawn)
        child.signal(signal.SIGHUP)
        if when == "at the re-exec":
            while not child.next_report().startswith("Re-executing"):
                pass
        else:
            threading.Event().wait(random.uniform(0, 0.120))  # a delay, not a synchronisation
        child.signal(signal.SIGTERM)
        assert child.wait() == 0, child.output()


def test_restart_the_new_image_could_not_run_is_refused_and_the_site_keeps_serving(
    spawn: Spawn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After dropping to nobody, an interpreter nobody cannot execute: SIGHUP logs why."""
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    python = private / "python"
    python.symlink_to(os.path.realpath(sys.executable))
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", str(python))
        patch.setenv("PYTHONPATH", str(SRC))  # not the venv any more
        child, port = serve_steps(spawn, "--as-nobody")
    child.signal(signal.SIGHUP)
    line = child.expect("Not restarting: ")
    assert f"the interpreter {python} cannot be executed by uid" in line
    assert line.endswith("the site keeps serving")
    assert get(port)[0] == 200
    child.signal(signal.SIGTERM)
    child.expect("Bus stopping")
    child.expect("exited 0")
    assert child.wait() == 0, child.output()


def test_exit_requested_with_a_restart_wins_and_nothing_is_re_executed(bus: Bus) -> None:
    """An exit asked for together with a restart exits: the hand-over stays empty."""
    plugin = Signals(bus)
    plugin.subscribe()
    try:
        bus.start()
        bus.request_restart()
        bus.request_exit()
        assert bus.block() == 0
        assert bus.wait(State.EXITING, timeout=5)
        assert not bus.restarting
    finally:
        plugin.unsubscribe()
