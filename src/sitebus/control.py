"""Control a running site through its PID file, and launch one as a daemon.

The control commands find the site through its PID file and decide whether
it runs by the file's lock, as the pidfile plugin does
(``sitebus.plugins.pidfile.read_running_pid``): a file naming a process that
merely reuses a dead site's PID is "not running", and that process is never
signalled. The signal goes through a process file descriptor opened while
the lock was held, so it cannot reach a process that took the PID since.

    sitebus status   --pidfile PATH
    sitebus stop     --pidfile PATH [--timeout SECONDS]
    sitebus reload   --pidfile PATH
    sitebus graceful --pidfile PATH

Exit statuses, as LSB init scripts expect them:

    status     0 and the PID when the site runs; 3 and ``not running`` when it
               does not (no PID file, or a stale one).
    stop       0 once the site is gone (SIGTERM, then waits up to --timeout,
               default 60 s); 0 with ``not running`` when it was not running
               (stopping a stopped service succeeds); 1 when it is still
               running at the timeout (it is not killed).
    reload     0 once SIGHUP is sent (the site re-executes in place; a site
               whose standard input is a terminal takes SIGHUP as exit, as
               the signals plugin does); 1 when the site is not running.
    graceful   0 once SIGUSR1 is sent (the site reopens logs and reloads);
               1 when the site is not running.

Any command: 1 with one line when the PID file cannot be read (a symbolic
link, a directory, no permission), 2 for a usage error.

``add_process_options`` and ``subscribe_process_plugins`` give ``serve`` (and
``run``) the ``--daemonize`` and ``--pidfile`` options.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import time
from typing import TYPE_CHECKING

from ._argtypes import ranged
from ._options import MAX_SECONDS
from .errors import ProcessError

# The plugins are imported where they are used: the PID file plugin pulls in
# tempfile (and with it shutil and random), which `sitebus serve` without
# these options should not pay for at start-up.
if TYPE_CHECKING:
    from .bus import Bus

__all__ = ["add_commands", "add_process_options", "subscribe_process_plugins"]

NOT_RUNNING = 3  # LSB: "program is not running", the status of `status`
STOP_TIMEOUT = 60.0
# The fallback wait (no pidfd): how often to look at the lock again.
_POLL_INTERVAL = 0.05


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``status``, ``stop``, ``reload`` and ``graceful`` on the ``sitebus`` parser."""
    status = _command(
        subparsers,
        "status",
        "say whether the site runs",
        "Print the PID and exit 0 when the site holding the PID file runs; "
        "print 'not running' and exit 3 when it does not.",
    )
    status.set_defaults(command=_status)
    stop = _command(
        subparsers,
        "stop",
        "stop the site and wait until it is gone",
        "Send SIGTERM to the site holding the PID file and wait until it has exited "
        "(exit 0). Exit 0 with 'not running' when it was not running; exit 1 when it "
        "is still running after the timeout (it is not killed).",
    )
    stop.add_argument(
        "--timeout",
        type=ranged(float, 0.0, MAX_SECONDS, "a number of seconds from 0 to 1e8"),
        default=STOP_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the site to exit (default {STOP_TIMEOUT:g})",
    )
    stop.set_defaults(command=_stop)
    reload = _command(
        subparsers,
        "reload",
        "restart the site in place (SIGHUP)",
        "Send SIGHUP to the site holding the PID file: it re-executes itself with the "
        "new code, keeping its sockets (a site on a terminal exits instead). "
        "Exit 1 when it is not running.",
    )
    reload.set_defaults(command=_signal_command, signal=signal.SIGHUP)
    graceful = _command(
        subparsers,
        "graceful",
        "reload the site's configuration and reopen its logs (SIGUSR1)",
        "Send SIGUSR1 to the site holding the PID file: it publishes 'graceful' "
        "(reopen logs, reload configuration). Exit 1 when it is not running.",
    )
    graceful.set_defaults(command=_signal_command, signal=signal.SIGUSR1)


def add_process_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--daemonize`` and ``--pidfile PATH`` to a command that runs a site."""
    parser.add_argument(
        "--daemonize",
        action="store_true",
        help="detach from the terminal (the site keeps the current directory, its output "
        "goes to /dev/null); this command returns 0 once the site serves, or 1 with the "
        "site's error when its start fails",
    )
    parser.add_argument(
        "--pidfile",
        metavar="PATH",
        help="write the site's PID to PATH, locked while it runs (for stop, reload, "
        "graceful and status); refuse to start when a running site holds it",
    )


def subscribe_process_plugins(bus: Bus, *, daemonize: bool, pidfile: str | None) -> None:
    """Subscribe the daemon and PID file plugins that ``--daemonize`` and ``--pidfile`` ask for.

    The daemon forks at start, so call ``bus.start()`` with no other thread
    running. It stays in the current directory (the plugin's default is
    ``/``): paths given on the command line (a ``unix:`` socket, a TLS
    certificate, an app's data files) mean what they mean in the foreground.
    """
    if daemonize:
        from .plugins.daemon import Daemon, DaemonOptions

        Daemon(bus, DaemonOptions(chdir=None)).subscribe()
    if pidfile is not None:
        from .plugins.pidfile import Pidfile, PidfileOptions

        Pidfile(bus, PidfileOptions(path=pidfile)).subscribe()


def _command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=description)
    parser.add_argument(
        "--pidfile", required=True, metavar="PATH", help="the PID file the site was started with"
    )
    return parser


def _status(args: argparse.Namespace) -> int:
    from .plugins.pidfile import read_running_pid

    pid = read_running_pid(args.pidfile)
    if pid is None:
        print("not running")
        return NOT_RUNNING
    print(pid)
    _print_workers(args.pidfile, pid)
    return 0


def _print_workers(pidfile: str, pid: int) -> None:
    """A master's workers, one line each, below its PID: what ``Workers`` last wrote."""
    from .workers.master import read_status
    from .workers.serve import status_file

    path = status_file(os.path.abspath(pidfile))
    workers = None if path is None else read_status(path, pid)
    if not workers:
        return
    now = time.time()
    print(f"{'PID':>8} {'AGE':>8} {'REQUESTS':>9} {'RSS':>10} STATE")
    for worker in workers:
        age = _age(now - float(worker.get("started", now)))
        rss = f"{int(worker.get('rss', 0)) / 2**20:.1f}MiB"
        print(
            f"{worker.get('pid')!s:>8} {age:>8} {worker.get('requests')!s:>9} {rss:>10} "
            f"{worker.get('state')}"
        )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _stop(args: argparse.Namespace) -> int:
    site = _Site.find(args.pidfile)
    if site is None:
        print("not running")
        return 0
    with site:
        site.send(signal.SIGTERM)
        if not site.wait_gone(args.timeout):
            raise ProcessError(
                f"the site (PID {site.pid}, PID file {args.pidfile!r}) is still running "
                f"{args.timeout:g} s after SIGTERM; it was not killed"
            )
    print(f"stopped (PID {site.pid})")
    return 0


def _signal_command(args: argparse.Namespace) -> int:
    signum = signal.Signals(args.signal)
    site = _Site.find(args.pidfile)
    if site is None:
        raise ProcessError(f"not running: no running site holds the PID file {args.pidfile!r}")
    with site:
        site.send(signum)
    print(f"sent {signum.name} to PID {site.pid}")
    return 0


class _Site:
    """The running site named by a PID file, held by a process file descriptor if possible.

    ``pidfd_open`` (Linux 5.3) pins the process: signals sent through it and
    the wait for its exit can only concern the process that held the lock,
    even if it exits and its PID is reused meanwhile. Without it, signals go
    by PID right after the lock was seen held, and the wait polls the lock.
    """

    def __init__(self, path: str, pid: int, pidfd: int | None) -> None:
        self.path = path
        self.pid = pid
        self._pidfd = pidfd

    @classmethod
    def find(cls, path: str) -> _Site | None:
        """The site holding ``path``'s lock, or None when none runs."""
        from .plugins.pidfile import read_running_pid

        pid = read_running_pid(path)
        if pid is None:
            return None
        try:
            pidfd = _pidfd_open(pid)
        except ProcessLookupError:
            return None  # it exited since
        if pidfd is None:
            return cls(path, pid, None)
        # Opened after the lock was seen held: it names the site only if the
        # site still holds the lock now (it then ran all along, under this PID).
        if read_running_pid(path) != pid:
            os.close(pidfd)
            return None
        return cls(path, pid, pidfd)

    def __enter__(self) -> _Site:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def send(self, signum: signal.Signals) -> None:
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass  # it exited meanwhile: for stop, that is the goal; otherwise, too late to tell
        except PermissionError as exc:
            raise ProcessError(
                f"cannot send {signum.name} to the site (PID {self.pid}): {exc.strerror}"
            ) from exc

    def wait_gone(self, timeout: float) -> bool:
        """Whether the site exited within ``timeout`` seconds."""
        if self._pidfd is not None:
            # A process file descriptor becomes readable when the process exits.
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            return bool(ready)
        from .plugins.pidfile import read_running_pid

        deadline = time.monotonic() + timeout
        while read_running_pid(self.path) == self.pid:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_POLL_INTERVAL, left))
        return True


def _pidfd_open(pid: int) -> int | None:
    """A process file descriptor for ``pid``; None where the system offers none.

    Raises ``ProcessLookupError`` when no process has that PID any more.
    """
    if not hasattr(os, "pidfd_open"):  # not Linux
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError:  # ENOSYS before Linux 5.3, or refused by a seccomp filter
        return None
