"""Daemon: detach the site from the terminal that launched it, and report back.

The classic double fork: the first child calls ``setsid`` to leave the
terminal's session, and forks again so that the daemon is not a session leader
and can never acquire a controlling terminal. The daemon then changes
directory, sets its umask and points its standard streams at /dev/null or at
log files.

Unlike CherryPy's daemonizer, the launching process does not return at once:
it waits on a pipe that the daemon inherits, until the bus reaches STARTED
(exit status 0) or its start fails (the failure's message on the launching
terminal, status 1). A daemonized site whose port is in use says so where the
deployer typed the command.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
from typing import TYPE_CHECKING, NoReturn

from .._options import MAX_SECONDS, Options, check_range
from ..bus import State
from ..errors import ProcessError
from ..plugin import Plugin, StartOrder, priority

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["Daemon", "DaemonOptions"]


# Holds the daemon's PID; a re-exec keeps PID and environment, so the next
# image sees it is already a daemon. An unrelated child process has another PID.
_DAEMON_ENV = "SITEBUS_DAEMON_PID"


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

    @property
    def daemonized(self) -> bool:
        """Whether this process is the daemon (also true after a re-exec of it)."""
        return os.environ.get(_DAEMON_ENV) == str(os.getpid())

    @priority(StartOrder.DAEMON)
    def start(self) -> None:
        if self.daemonized:
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
        session_leader = os.fork()
        if session_leader:
            os.close(write_fd)
            _launcher(session_leader, read_fd, self.options.report_timeout)
        os.close(read_fd)
        os.setsid()
        if os.fork():
            # The session leader's only job was to fork the daemon; it must not
            # run anything else of this process (atexit handlers, finally
            # blocks, the bus's stop listeners belong to the daemon now), so it
            # ends here without Python's exit machinery.
            os._exit(0)
        os.environ[_DAEMON_ENV] = str(os.getpid())
        self._report_fd = write_fd
        self._detach()
        self.bus.log(f"Daemonized: PID {os.getpid()}")

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

    def log(self, message: str, level: int, exc: BaseException | None) -> None:
        """Remember the start failure the bus logs (else the first error) for the report."""
        if self._report_fd is None or level < logging.ERROR:
            return
        if self._failure is None or message.startswith("Start failed"):
            self._failure = message

    def state(self, state: State) -> None:
        """Tell the launching process how the start ended, once."""
        if self._report_fd is None:
            return
        if state is State.STARTED:
            self._report(b"started\n")
        elif state in (State.STOPPING, State.STOPPED, State.EXITING):
            failure = self._failure or f"the bus went to {state.value} while starting"
            self._report(b"failed " + failure.encode("utf-8", "replace") + b"\n")

    def _report(self, line: bytes) -> None:
        fd, self._report_fd = self._report_fd, None
        if fd is None:
            return
        try:
            os.write(fd, line)
        except OSError:  # the launching process is gone (killed): nobody to tell
            pass
        finally:
            os.close(fd)


def _redirect(target: int, path: str | os.PathLike[str], flags: int) -> None:
    fd = os.open(path, flags, 0o666)  # the umask set just before shapes the mode
    try:
        os.dup2(fd, target)
    finally:
        os.close(fd)


def _launcher(session_leader: int, read_fd: int, timeout: float | None) -> NoReturn:
    """The launching process: wait for the daemon's report, then end with its status.

    It ends with ``os._exit``: it is a copy of the site taken mid-start, and a
    normal exit would run the site's atexit handlers, flush copies of its
    buffers and unwind into the caller's ``finally`` blocks as if the site
    itself had stopped; only the status and the message belong to it.
    """
    os.waitpid(session_leader, 0)  # it exits as soon as it forked the daemon
    report = b""
    ready, _, _ = select.select([read_fd], [], [], timeout)
    if ready:
        while b"\n" not in report and (chunk := os.read(read_fd, 4096)):
            report += chunk
    line = report.decode("utf-8", "replace").strip()
    if line == "started":
        os._exit(0)
    if line.startswith("failed "):
        message = f"daemon failed to start: {line.removeprefix('failed ')}\n"
    elif ready:
        message = "daemon exited before it reported how its start went; see its log\n"
    else:
        message = f"daemon did not report within {timeout:g} s; it may still be starting\n"
    os.write(2, message.encode())
    os._exit(1)
