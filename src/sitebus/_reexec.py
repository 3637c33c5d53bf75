"""Replacing the process with a fresh run of its own command line.

``block()`` calls this after the site has stopped and exited for a restart.
The new image is ``sys.executable`` with ``sys.orig_argv``, so interpreter
options and ``python -m pkg`` survive; it starts from the directory the
process was launched from, and with the control signals held back until its
own ``block()`` runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from .errors import describe

# logging.INFO and logging.ERROR, without importing logging (see bus.py)
_INFO, _ERROR = 20, 40

# Signals held back across a re-exec: a signal that lands while the new image
# boots would otherwise meet the default action (death) before any handler is
# installed. They stay pending and are delivered once block() runs again.
HELD_SIGNALS = frozenset(
    {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}
)
HELD_SIGNALS_ENV = "SITEBUS_HELD_SIGNALS"
# An exit asked for while the old image was already tearing down for the
# restart: the new image carries it out as soon as its block() runs.
PENDING_EXIT_ENV = "SITEBUS_PENDING_EXIT"


def _getcwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the directory was removed under us: nothing to return to
        return None


# The directory the process was started from, read when sitebus is imported,
# before a daemon changes to "/": a re-exec goes back there first, or a
# relative script path (or ``-m`` with the current directory on sys.path)
# would no longer resolve.
LAUNCH_DIR = _getcwd()


def reexec(log: Callable[[str, int], None], *, pending_exit: int | None = None) -> None:
    """Exec this process's command line again; returns only if the exec failed.

    ``pending_exit``: the status of an exit request that came too late to stop
    the restart, for the new image to carry out.
    """
    import shlex  # here, not at the top: only a re-exec needs it

    argv = [sys.executable, *sys.orig_argv[1:]]
    log(f"Re-executing: {shlex.join(argv)}", _INFO)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    if LAUNCH_DIR is not None and _getcwd() != LAUNCH_DIR:
        try:
            os.chdir(LAUNCH_DIR)
        except OSError as exc:
            log(f"Cannot return to {LAUNCH_DIR} to re-exec: {describe(exc)}", _ERROR)
    if pending_exit is not None:
        os.environ[PENDING_EXIT_ENV] = str(pending_exit)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    os.environ[HELD_SIGNALS_ENV] = ",".join(str(int(s)) for s in HELD_SIGNALS - held)
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.environ.pop(HELD_SIGNALS_ENV, None)
        os.environ.pop(PENDING_EXIT_ENV, None)
        log(f"Re-exec of {sys.executable} failed: {describe(exc)}", _ERROR)


def release_held_signals() -> None:
    """Unblock the signals a re-exec held back, so pending ones are delivered now."""
    held = os.environ.pop(HELD_SIGNALS_ENV, None)
    if held:
        signal.pthread_sigmask(
            signal.SIG_UNBLOCK, {signal.Signals(int(s)) for s in held.split(",")}
        )


def take_pending_exit() -> int | None:
    """The exit status the previous image asked this one to carry out, if any."""
    pending = os.environ.pop(PENDING_EXIT_ENV, None)
    try:
        return None if pending is None else int(pending)
    except ValueError:
        return None
