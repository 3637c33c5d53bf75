"""Replacing the process with a fresh run of its own command line.

``block()`` calls this after the site has stopped and exited for a restart.
The new image is ``sys.executable`` with ``sys.orig_argv``, so interpreter
options and ``python -m pkg`` survive; it starts from the directory the
process was launched from, and with the control signals held back until its
own ``block()`` runs.

Everything the re-exec needs is imported here, when sitebus is imported: by
the time of a restart the process may have dropped its privileges and be
unable to read the standard library (an interpreter under ``/root``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Callable
from logging import ERROR, INFO
from typing import TYPE_CHECKING

from . import _handover
from .errors import describe

if TYPE_CHECKING:
    from ._wakeup import Wakeup


# Signals held back across a re-exec: a signal that lands while the new image
# boots would otherwise meet the default action (death) before any handler is
# installed. They stay pending and are delivered once block() runs again.
HELD_SIGNALS = frozenset(
    {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}
)


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


def _may(path: str, mode: int) -> bool:
    """Whether this process, as its effective user, may access ``path`` with ``mode``."""
    effective = os.access in os.supports_effective_ids
    return os.access(path, mode, effective_ids=effective)


def cannot_reexec() -> str | None:
    """Why a re-exec would fail for the current (maybe unprivileged) user; None if it can run.

    Checked before the restart tears the site down: the interpreter must be
    executable, its standard library readable, the launch directory
    enterable and the script readable, where those can be known.
    """
    uid = os.geteuid()
    if not _may(sys.executable, os.X_OK):
        return f"the interpreter {sys.executable} cannot be executed by uid {uid}"
    stdlib = os.path.dirname(os.__file__)
    if not _may(stdlib, os.R_OK | os.X_OK):
        return f"the standard library {stdlib} cannot be read by uid {uid}"
    if LAUNCH_DIR is not None and not _may(LAUNCH_DIR, os.X_OK):
        return f"the launch directory {LAUNCH_DIR} cannot be entered by uid {uid}"
    script = sys.argv[0] if sys.argv else ""
    if script and script not in ("-c", "-m") and LAUNCH_DIR is not None:
        path = os.path.join(LAUNCH_DIR, script)
        if os.path.isfile(path) and not _may(path, os.R_OK):
            return f"the script {path} cannot be read by uid {uid}"
    return None


def reexec(
    log: Callable[[str, int], None], wakeup: Wakeup, exit_request: Callable[[], int | None]
) -> None:
    """Exec this process's command line again; returns only if the exec failed.

    ``wakeup`` is the pipe registered with ``signal.set_wakeup_fd``, still
    registered; ``exit_request()`` reads the bus's pending exit request.

    No exit request may be lost between the restart decision and the new
    image. The order that guarantees it:

    1. Block the held signals in this (the main) thread. From now on a signal
       sent to the process either stays pending here (pending signals and the
       mask survive ``execv``) or is delivered to another thread that does not
       block it, whose C-level handler writes the signal's number into the
       wake-up pipe. Other threads cannot be made to block it from here, and
       their C handler only flags the Python handler, which would run here at
       the next bytecode: after ``execv`` that flag is gone.
    2. Empty the wake-up pipe. Each signal number read there had its Python
       handler flagged already, so that handler runs before step 3.
    3. Read the exit request, the last check, and put it in the hand-over.
    4. Hand the pipe's read end to the new image: every signal that reached a
       C handler after step 2 left its number there, and the new image raises
       it again (``release_held_signals``) before unblocking.
    """
    argv = [sys.executable, *sys.orig_argv[1:]]
    log(f"Re-executing: {shlex.join(argv)}", INFO)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    if LAUNCH_DIR is not None and _getcwd() != LAUNCH_DIR:
        try:
            os.chdir(LAUNCH_DIR)
        except OSError as exc:
            log(f"Cannot return to {LAUNCH_DIR} to re-exec: {describe(exc)}", ERROR)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    wakeup.drain()
    pending_exit = exit_request()
    if pending_exit is not None:
        _handover.put("exit", pending_exit)
    newly_held = sorted(int(s) for s in HELD_SIGNALS - held)
    _handover.put("signals", {"held": newly_held, "pipe": wakeup.fileno()}, [wakeup.fileno()])
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        _handover.take("signals")
        _handover.take("exit")
        os.set_inheritable(wakeup.fileno(), False)
        log(f"Re-exec of {sys.executable} failed: {describe(exc)}", ERROR)


def release_held_signals() -> None:
    """Deliver what a re-exec held back: signals pending, and those caught in its pipe.

    A signal the old image's C handler caught after its last check left its
    number in the handed-over pipe: it is sent again, while still blocked, so
    that it is delivered with the pending ones as the mask is released.
    """
    handed = _handover.take("signals")
    if not isinstance(handed, dict):
        return
    held = {signal.Signals(s) for s in handed.get("held", ())}
    pipe = handed.get("pipe")
    if isinstance(pipe, int):
        for signum in _read_all(pipe):
            if signum in held:
                os.kill(os.getpid(), signum)
    if held:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _read_all(fd: int) -> set[int]:
    """The distinct bytes left in the pipe ``fd``, which is then closed."""
    seen: set[int] = set()
    try:
        os.set_blocking(fd, False)
        while chunk := os.read(fd, 4096):
            seen.update(chunk)
    except OSError:  # empty (EAGAIN), or not open
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return seen


def take_pending_exit() -> int | None:
    """The exit status the previous image asked this one to carry out, if any."""
    pending = _handover.take("exit")
    return pending if isinstance(pending, int) else None
