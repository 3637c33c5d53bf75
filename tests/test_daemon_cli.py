"""``sitebus serve --daemonize --pidfile``: the launcher returns once the daemon serves, or fails
with the daemon's own error and leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import CHILDREN, WAIT, Child
from sitebus.plugins.pidfile import read_running_pid
from test_servers import get

Spawn = Callable[..., Child]


def sitebus(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sitebus`` to completion in the children's folder (where the apps are)."""
    return subprocess.run(
        [sys.executable, "-m", "sitebus", *args],
        cwd=CHILDREN,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


def processes_naming(text: str) -> list[int]:
    """PIDs of the processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    """A PID file path; whatever daemon still holds it afterwards is killed by its PID."""
    path = tmp_path / "site.pid"
    yield path
    pid = read_running_pid(path)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_launcher_returns_0_once_the_daemon_serves_then_status_and_stop_use_the_pid_file(
    pidfile: Path,
) -> None:
    port = free_port()
    bind = f"127.0.0.1:{port}"
    launched = sitebus(
        "serve", "hello_app:app", "--bind", bind, "--daemonize", "--pidfile", str(pidfile)
    )
    assert (launched.returncode, launched.stdout, launched.stderr) == (0, "", "")
    pid = read_running_pid(pidfile)
    assert pid is not None
    assert get(port) == (200, f"hello {pid}".encode())  # served right away, by the daemon
    status = sitebus("status", "--pidfile", str(pidfile))
    assert (status.returncode, status.stdout) == (0, f"{pid}\n")
    stop = sitebus("stop", "--pidfile", str(pidfile))
    assert (stop.returncode, stop.stdout) == (0, f"stopped (PID {pid})\n")
    assert not pidfile.exists()
    assert processes_naming(str(pidfile)) == []
    status = sitebus("status", "--pidfile", str(pidfile))
    assert (status.returncode, status.stdout) == (3, "not running\n")


def test_daemon_keeps_the_launch_directory_so_relative_paths_mean_the_same(
    tmp_path: Path,
) -> None:
    """A relative ``unix:`` socket path is made where it would be in the foreground."""
    serve = ["serve", "hello_app:app", "--bind", "unix:site.sock", "--daemonize"]
    env = {**os.environ, "PYTHONPATH": str(CHILDREN)}
    launched = subprocess.run(
        [sys.executable, "-m", "sitebus", *serve, "--pidfile", "site.pid"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    pidfile = tmp_path / "site.pid"
    pid = read_running_pid(pidfile)
    try:
        assert launched.returncode == 0, launched.stderr
        assert get(str(tmp_path / "site.sock")) == (200, f"hello {pid}".encode())
    finally:
        assert sitebus("stop", "--pidfile", str(pidfile)).returncode == 0
    assert not (tmp_path / "site.sock").exists()


def test_address_in_use_fails_the_launcher_with_one_line_and_leaves_no_daemon_or_pid_file(
    pidfile: Path,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        launched = sitebus(
            "serve", "hello_app:app", "--bind", bind, "--daemonize", "--pidfile", str(pidfile)
        )
        # The launcher returned only after the daemon exited: nothing to wait for.
        assert processes_naming(str(pidfile)) == []
    assert launched.returncode == 1
    # The daemon's own error line, as `sitebus serve` prints it in the foreground.
    assert (
        launched.stderr == f'daemon failed to start: Cannot bind "{bind}": address already in use\n'
    )
    assert not pidfile.exists()


def test_second_daemon_on_the_same_pid_file_fails_naming_the_first(
    pidfile: Path, tmp_path: Path
) -> None:
    serve = ["serve", "hello_app:app", "--daemonize", "--pidfile", str(pidfile)]
    first = sitebus(*serve, "--bind", f"unix:{tmp_path / 'first.sock'}")
    assert first.returncode == 0, first.stderr
    pid = read_running_pid(pidfile)
    second = sitebus(*serve, "--bind", f"unix:{tmp_path / 'second.sock'}")
    assert second.returncode == 1
    assert second.stderr == f"daemon failed to start: already running as PID {pid} ({pidfile})\n"
    assert read_running_pid(pidfile) == pid
    assert sitebus("stop", "--pidfile", str(pidfile)).returncode == 0


def test_serve_in_the_foreground_with_a_pid_file_is_controlled_through_it(
    spawn: Spawn, pidfile: Path
) -> None:
    """Without --daemonize the serving process itself writes and holds the PID file."""
    args = ["hello_app:app", "--bind", "127.0.0.1:0", "--pidfile", str(pidfile)]
    child = spawn([str(CHILDREN / "serve_reporting.py"), *args], cwd=CHILDREN)
    child.expect("cheroot serving on ")
    assert read_running_pid(pidfile) == child.pid
    stop = sitebus("stop", "--pidfile", str(pidfile))
    assert (stop.returncode, stop.stdout) == (0, f"stopped (PID {child.pid})\n")
    child.expect("exited 0")
    assert not pidfile.exists()


def test_serve_help_lists_daemonize_and_pidfile() -> None:
    done = sitebus("serve", "--help")
    assert done.returncode == 0
    assert "--daemonize" in done.stdout and "--pidfile PATH" in done.stdout
