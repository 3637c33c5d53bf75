"""Shared fixtures: a clean-process guard and real child processes."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sitebus import Bus

CHILDREN = Path(__file__).parent / "children"

# A shell starts background jobs with SIGINT ignored, and an ignored signal
# stays ignored across exec: children would then never see Ctrl-C, and the
# tests that send SIGINT would prove nothing. Children inherit the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
WAIT = 30.0  # generous bound for anything a child process must do


def _handlers() -> dict[int, object]:
    return {int(s): signal.getsignal(s) for s in signal.valid_signals() if signal.getsignal(s)}


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _new_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    """Threads started since ``before``, but the process's one bus watchdog, which
    starts with the first watched teardown and lives as long as the process."""
    return {t for t in set(threading.enumerate()) - before if t.name != "sitebus-watchdog"}


@pytest.fixture(autouse=True)
def process_left_as_found() -> Iterator[None]:
    """Every test leaves signal handlers, threads and descriptors as it found them."""
    handlers, threads = _handlers(), set(threading.enumerate())
    fds = _open_fds()
    yield
    deadline = time.monotonic() + 10
    for thread in _new_threads(threads):
        thread.join(max(0.0, deadline - time.monotonic()))
    assert _new_threads(threads) == set(), "test left threads running"
    assert _handlers() == handlers, "test left signal handlers changed"
    leaked = _open_fds() - fds
    assert not leaked, f"test left file descriptors open: {sorted(leaked)}"


@pytest.fixture
def bus() -> Bus:
    """A fresh bus with a short teardown bound, not forwarding to stdlib logging."""
    return Bus(listener_timeout=5.0)


class Child:
    """A real Python child process that reports progress on an inherited pipe.

    The child finds the write end's number in ``SITEBUS_TEST_REPORT_FD`` and
    writes one line per event; ``expect`` blocks on the read end with a bound,
    so tests never sleep.
    """

    def __init__(
        self,
        args: list[str],
        tmp_path: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        read_fd, write_fd = os.pipe()
        # A second pipe lets the test hold the child at a point of its choosing
        # (the child reads one byte from SITEBUS_TEST_HOLD_FD) and release it.
        hold_read, self._hold_write = os.pipe()
        self.stdout_path = tmp_path / f"child-{id(self)}.out"
        self.stderr_path = tmp_path / f"child-{id(self)}.err"
        child_env = {**os.environ, **(env or {})}
        child_env["SITEBUS_TEST_REPORT_FD"] = str(write_fd)
        child_env["SITEBUS_TEST_HOLD_FD"] = str(hold_read)
        child_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(CHILDREN), os.environ.get("PYTHONPATH")])
        )
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-u", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(write_fd, hold_read, *pass_fds),
                cwd=cwd,
                env=child_env,
            )
        os.close(write_fd)
        os.close(hold_read)
        self._reports = os.fdopen(read_fd, "rb", buffering=0)
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def expect(self, report: str, timeout: float = WAIT) -> str:
        """Wait for the next report line; fail unless it starts with ``report``."""
        line = self.next_report(timeout)
        assert line.startswith(report), f"expected {report!r}, got {line!r}\n{self.output()}"
        return line

    def next_report(self, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._reports], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"no report within {timeout} s\n{self.output()}")
            chunk = self._reports.read(4096)
            if not chunk:
                raise AssertionError(f"child closed its report pipe\n{self.output()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def release(self) -> None:
        """Let a child held on its hold pipe go on."""
        os.write(self._hold_write, b"go\n")

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"child still running after {timeout} s\n{self.output()}"
            ) from None

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout()}--- stderr ---\n{self.stderr()}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)
        self._reports.close()
        os.close(self._hold_write)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start children with ``spawn(args)``; each is killed and reaped by PID afterwards."""
    started: list[Child] = []

    def start(args: list[str], **options: Any) -> Child:
        child = Child(args, tmp_path, **options)
        started.append(child)
        return child

    yield start
    for child in started:
        child.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[socket.socket]:
    """A Unix datagram socket bound in tmp_path, as systemd's notify socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()
