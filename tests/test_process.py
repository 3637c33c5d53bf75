"""The bus in real child processes: signals, block(), re-exec, start failure."""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import WAIT, Child

Spawn = Callable[..., Child]
SCRIPT = "tests/children/blocking_site.py"


@pytest.fixture
def site(spawn: Spawn) -> Callable[..., Child]:
    def start(*options: str, module: bool = False) -> Child:
        args = ["-m", "blocking_site", *options] if module else [SCRIPT, *options]
        return spawn(args)

    return start


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_block_exits_zero_on_sigterm_and_sigint(site: Callable[..., Child], signum: int) -> None:
    child = site("--report-blocking")
    child.expect("started 0")
    child.expect("graceful")
    child.expect("blocking")
    child.signal(signum)
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0, child.output()


@pytest.mark.parametrize("module", [False, True], ids=["script", "python -m"])
def test_restart_reexecs_same_command_line(site: Callable[..., Child], module: bool) -> None:
    child = site("--restart-once", module=module)
    first = child.expect("started 0").split(maxsplit=3)
    child.expect("graceful")
    child.expect("stop")
    child.expect("exit")
    second = child.expect("started 1").split(maxsplit=3)
    assert second[2] == first[2], "re-exec keeps the PID"
    assert second[3] == first[3], "re-exec keeps the command line"
    assert ("-m blocking_site" in first[3]) == module
    child.signal(signal.SIGTERM)
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0


def test_start_failure_prints_one_clear_line_and_exits_nonzero(site: Callable[..., Child]) -> None:
    child = site("--fail-start")
    child.expect("stop")  # the rollback tore down what started
    assert child.wait() == 1
    # Logging is not configured: the bus log shows on stderr, one error among it.
    lines = [line for line in child.stderr().splitlines() if " ERROR " in line]
    assert len(lines) == 1, child.output()
    assert "Start failed in" in lines[0] and "address already in use" in lines[0]
    assert "Traceback" not in child.stderr()


@pytest.mark.parametrize(
    ("signum", "action", "then"),
    [
        (signal.SIGTERM, "stop", "exited 0"),
        (signal.SIGUSR1, "graceful", None),
        (signal.SIGHUP, "stop", "started 1"),
    ],
    ids=["exit", "graceful", "restart"],
)
def test_signal_burst_during_start_is_one_action_without_deadlock(
    site: Callable[..., Child], signum: int, action: str, then: str | None
) -> None:
    """100 signals while start() holds the transition lock: handlers take no lock,
    the requests coalesce, and block() carries out exactly one action."""
    child = site("--hold-start")
    child.expect("holding")
    for _ in range(100):
        child.signal(signum)
    child.release()
    child.expect("started 0")
    child.expect(action)
    if then is not None:
        if action == "stop":
            child.expect("exit")
        child.expect(then)
    # Exactly one action: the next report is the one our final SIGTERM causes.
    if then != "exited 0":
        child.signal(signal.SIGTERM)
        child.expect("stop")
        child.expect("exit")
        child.expect("exited 0")
    assert child.wait() == 0


def test_second_exit_request_while_stopping_coalesces(site: Callable[..., Child]) -> None:
    """A supervisor's repeated SIGTERM does not cut the stop short (only Ctrl-C does)."""
    child = site("--hold-stop")
    child.expect("started 0")
    child.signal(signal.SIGTERM)
    child.expect("stopping")
    child.signal(signal.SIGTERM)
    child.release()
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0
    assert "exiting now" not in child.stderr()


def test_second_interrupt_while_stopping_exits_at_once(site: Callable[..., Child]) -> None:
    child = site("--slow-stop", "--report-blocking")
    child.expect("started 0")
    child.expect("graceful")
    child.expect("blocking")
    child.signal(signal.SIGINT)
    child.expect("stopping")
    child.signal(signal.SIGINT)
    child.expect("exited 1")
    assert child.wait() == 1


def test_sigterm_during_a_restart_is_carried_out_by_the_new_process(
    site: Callable[..., Child],
) -> None:
    """The restart's teardown already kept what the new image needs (sockets):
    cutting it short would reset queued connections, so the new image exits."""
    child = site("--hold-stop")
    first_pid = child.expect("started 0").split()[2]
    child.signal(signal.SIGHUP)
    child.expect("stopping")
    child.signal(signal.SIGTERM)
    child.release()
    child.expect("stop")
    child.expect("exit")
    assert child.expect("started 1").split()[2] == first_pid
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0


PERSISTENCE = "tests/children/persistence_site.py"


def test_cherrypys_persistence_example_starts_serves_stops_and_exits_zero(
    spawn: Callable[..., Child], tmp_path: Path
) -> None:
    """A plain sqlite3.connect() at start priority 20, closed at stop, on a served site."""
    child = spawn([PERSISTENCE, str(tmp_path / "site.sqlite3")])
    child.expect("db open")
    url = child.expect("serving ").split()[1]
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.read() == b"hello"
    child.signal(signal.SIGTERM)
    child.expect("db closed")
    child.expect("exited 0")
    assert child.wait() == 0, child.output()
    assert "ProgrammingError" not in child.stderr()


def test_an_exit_wedged_past_its_bound_ends_the_process_naming_the_listener(
    spawn: Callable[..., Child], tmp_path: Path
) -> None:
    """The watchdog's hard bound: stacks on stderr, then status 1, never a hang."""
    child = spawn(
        [PERSISTENCE, str(tmp_path / "site.sqlite3"), "--wedge-exit", "--exit-timeout", "1"],
    )
    child.expect("db open")
    child.expect("serving ")
    child.signal(signal.SIGTERM)
    child.expect("db closed")
    child.expect("wedged")
    assert child.wait() == 1
    stderr = child.stderr()
    assert (
        "the exit overran its bound in listener __main__.main.<locals>.wedged on 'exit'" in stderr
    )
    assert "Thread 0x" in stderr or "Current thread" in stderr  # every thread's stack
