"""Daemon: detach the site from the terminal that launched it, and report back.

The classic double fork: the first child calls ``setsid`` to leave the
terminal's session, and forks again so that the daemon is not a session leader
and can never acquire a controlling terminal. The daemon then changes
directory, sets its umask and points its standard streams at /dev/null or at
log files.

Unlike CherryPy's daemonizer, the launching process does not return at once:
it waits on a pipe that the daemon inherits, until the bus reaches STARTED
(exit status 0: every start listener ran, so the servers serve) or its start
fails (the failure's message on the launching terminal, status 1). A
daemonized site whose port is in use says so where the deployer typed the
command. After a failure the launcher also waits until the daemon has exited
(the pipe reaches end of file), up to ``gone_timeout``, so that when it
returns no daemon is left and the rollback has removed the PID file.

Ctrl-C (or SIGTERM) at the launcher while it waits leaves the daemon alone:
the launcher says ``daemon still starting as PID N`` and ends with status
128 + the signal's number. The daemon has its own session and is the site
now; stopping it is the job of ``sitebus stop`` or a signal to that PID. The
launcher never runs the site's listeners: from the fork on, the control
signals are blocked until it has installed its own handlers.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

from .. import _handover
from .._options import MAX_SECONDS, Options, check_range
from .._wakeup import Wakeup
from ..bus import State
from ..errors import ProcessError, SitebusError, describe
from ..plugin import Plugin, StartOrder, priority

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["Daemon", "DaemonOptions"]


# The hand-over section that tells a re-exec it already is the daemon.
_SECTION = "daemon"
# Blocked from before the first fork until each process has its own handlers.
_CONTROL_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
# After a failed start, how long the launcher waits for the daemon to exit:
# its rollback runs stop listeners, each bounded by the bus's listener_timeout.
GONE_TIMEOUT = 60.0


class DaemonOptions(Options):
    """How to detach.

    ``chdir``: the daemon's working directory (None keeps the current one).
    ``umask``: set in the daemon (None keeps the inherited one); the default
    0o022 keeps new files from being group- or world-writable. ``stdout`` and
    ``stderr``: files to append to, else /dev/null. ``report_timeout``: how
    long the launching process waits for the daemon's report (None: until it
    comes), after which it gives up with status 1 and leaves the daemon running.
    """

    chdir: str | os.PathLike[str] | None = "/"
    umask: int | None = 0o022
    stdout: str | os.PathLike[str] | None = None
    stderr: str | os.PathLike[str] | None = None
    report_timeout: float | None = None

    def __post_init__(self) -> None:
        check_range(self, "umask", 0, 0o777, "permission bits 0 to 777 (octal)")
        check_range(self, "report_timeout", 0, MAX_SECONDS, "seconds from 0 to 1e8")


class Daemon(Plugin):
    """Daemonizes at start (``StartOrder.DAEMON``), once per process; refuses if threads run."""

    def __init__(self, bus: Bus, options: DaemonOptions | None = None) -> None:
        super().__init__(bus)
        self.options = options if options is not None else DaemonOptions()
        self._report_fd: int | None = None
        self._failure: str | None = None
        self._daemonized = False

    @property
    def daemonized(self) -> bool:
        """Whether this process is the daemon (also true after a re-exec of it)."""
        return self._daemonized

    @priority(StartOrder.DAEMON)
    def start(self) -> None:
        if self._daemonized or _handover.take(_SECTION) is not None:
            self._daemonized = True
            if self.options.chdir is not None:  # the bus re-execs from the launch directory
                os.chdir(self.options.chdir)
            return
        others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        if others:
            raise ProcessError(
                "cannot daemonize: other threads are already running "
                f"({', '.join(sorted(others))}); a fork keeps only the calling thread, "
                "so subscribe the daemon plugin first and start threads after it"
            )
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()  # else both processes would write what is buffered
        read_fd, write_fd = os.pipe()
        # Blocked across the forks: a Ctrl-C landing in the launcher before it
        # has its own handlers would run the site's, and could unwind into
        # this start (and the site's stop listeners) there.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CONTROL_SIGNALS)
        session_leader = os.fork()
        if session_leader:
            os.close(write_fd)
            _launcher(session_leader, read_fd, self.options.report_timeout, mask)
        os.close(read_fd)
        os.setsid()
        if os.fork():
            # The session leader's only job was to fork the daemon; it must not
            # run anything else of this process (atexit handlers, finally
            # blocks, the bus's stop listeners belong to the daemon now), so it
            # ends here without Python's exit machinery.
            os._exit(0)
        self._daemonized = True
        self._report_fd = write_fd
        _write_line(write_fd, f"pid {os.getpid()}")
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._detach()
        self.bus.log(f"Daemonized: PID {os.getpid()}")

    def exit(self) -> None:
        """On a restart, tell the next image that it already is the daemon."""
        if self._daemonized and self.bus.restarting:
            _handover.put(_SECTION, True)

    def _detach(self) -> None:
        # The umask first: it shapes the mode of new log files. The log files
        # before the chdir: relative paths mean the launch directory.
        options = self.options
        if options.umask is not None:
            os.umask(options.umask)
        _redirect(0, os.devnull, os.O_RDONLY)
        appending = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        _redirect(1, options.stdout or os.devnull, appending)
        _redirect(2, options.stderr or os.devnull, appending)
        if options.chdir is not None:
            os.chdir(options.chdir)

    def start_failed(self, listener: str, exc: BaseException) -> None:
        """Remember the start failure the bus announces, for the report.

        A sitebus error already is the line for the deployer, as the command
        line prints it in the foreground (``Cannot bind "HOST:PORT": address
        already in use``); anything else is named with its listener and type.
        """
        if self._report_fd is not None:
            if isinstance(exc, SitebusError):
                self._failure = str(exc)
            else:
                self._failure = f"Start failed in {listener}: {describe(exc)}"

    def state(self, state: State) -> None:
        """Tell the launching process how the start ended, once."""
        if self._report_fd is None:
            return
        if state is State.STARTED:
            self._report(b"started\n")
        elif state in (State.STOPPED, State.EXITING):
            # Not at STOPPING: the rollback has yet to run the stop listeners,
            # and the launcher must not return while the PID file still exists.
            failure = self._failure or f"the bus went to {state.value} while starting"
            self._report(b"failed " + failure.encode("utf-8", "replace") + b"\n")

    def _report(self, line: bytes) -> None:
        fd, self._report_fd = self._report_fd, None
        if fd is None:
            return
        _write_line(fd, line.decode().rstrip("\n"))
        if line == b"started\n":
            os.close(fd)
        # After a failure the descriptor stays open (it is close-on-exec) until
        # this process ends: the launcher's end of file says the daemon is gone.


def _write_line(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):  # the launching process is gone: nobody to tell
        os.write(fd, line.encode("utf-8", "replace") + b"\n")


def _redirect(target: int, path: str | os.PathLike[str], flags: int) -> None:
    fd = os.open(path, flags, 0o666)  # the umask set just before shapes the mode
    try:
        os.dup2(fd, target)
    finally:
        os.close(fd)


def _launcher(
    session_leader: int, read_fd: int, timeout: float | None, mask: Iterable[int]
) -> NoReturn:
    """The launching process: wait for the daemon's report, then end with its status.

    It ends with ``os._exit``, the one place sitebus does so: it is a copy of
    the site taken mid-start, and a normal exit (or an exception) would run the
    site's atexit handlers, flush copies of its buffers and unwind into the
    caller's ``finally`` blocks and the bus's rollback as if the site itself
    had stopped; only the status and the message belong to it. The site's
    signal handlers are replaced (by ones that only record the signal and
    wake the wait) before the signals blocked across the fork are let in.
    """
    caught: list[int] = []
    wakeup = Wakeup()
    signal.set_wakeup_fd(wakeup.write_fd, warn_on_full_buffer=False)
    for signum in _CONTROL_SIGNALS:
        signal.signal(signum, lambda number, _frame: caught.append(number))
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.waitpid(session_leader, 0)  # it exits as soon as it forked the daemon
    reports = _Reports(read_fd)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not caught and reports.read(deadline, wakeup):
        if reports.outcome == "started":
            os._exit(0)
        if reports.outcome is not None:
            _say(f"daemon failed to start: {reports.outcome}")
            _wait_gone(reports, wakeup, caught)
            os._exit(1)
    if caught:
        reports.read(time.monotonic(), wakeup)  # the PID line, if it came meanwhile
        which = f" as PID {reports.pid}" if reports.pid else ""
        _say(f"daemon still starting{which}; not waiting for it (it was not stopped)")
        os._exit(128 + caught[0])
    if reports.ended:
        _say("daemon exited before it reported how its start went; see its log")
    else:
        _say(f"daemon did not report within {timeout:g} s; it may still be starting")
    os._exit(1)


def _wait_gone(reports: _Reports, wakeup: Wakeup, caught: list[int]) -> None:
    """After a failed start, wait (bounded) until the daemon has exited; say so if not."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while not caught and reports.read(deadline, wakeup):
        pass
    if not reports.ended:
        which = f" (PID {reports.pid})" if reports.pid else ""
        _say(f"the daemon{which} has not exited yet; it may still be rolling back its start")


class _Reports:
    """The daemon's lines on the report pipe: ``pid N``, then ``started`` or ``failed ...``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid: str | None = None
        self.outcome: str | None = None  # "started", or the failure's message
        self.ended = False
        self._partial = b""

    def read(self, deadline: float | None, wakeup: Wakeup) -> bool:
        """Read what arrives until ``deadline`` or a wake-up; False once nothing more will."""
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.fd, wakeup.fileno()], [], [], left)
        if self.fd not in ready:
            return bool(ready)  # woken by a signal: the caller looks at what it caught
        chunk = os.read(self.fd, 4096)
        if not chunk:
            self.ended = True
            return False
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("pid "):
                self.pid = line.removeprefix("pid ")
            elif line == "started":
                self.outcome = line
            elif line.startswith("failed "):
                self.outcome = line.removeprefix("failed ")
        return True


def _say(message: str) -> None:
    os.write(2, message.encode("utf-8", "replace") + b"\n")
