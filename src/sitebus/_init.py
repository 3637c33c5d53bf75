"""A minimal init for ``sitebus run`` and ``sitebus serve`` started as PID 1 in a container.

PID 1 is special in two ways. The kernel gives it no default signal actions:
a SIGTERM from ``docker stop`` or the kubelet that no handler catches is
dropped, not fatal, so a site that is still importing its apps could not be
stopped. And every orphaned process of the container is re-parented to it:
a process that does not wait for them collects zombies, one per
double-forked helper that ever exited.

Reaping in the site's own process would not do: ``waitpid(-1)`` takes the
exit status of any child, including those of the apps' ``subprocess.run``,
which would then see a wrong status or none. So the command forks at its
very start, before any thread, import of an app or bind: the parent stays PID
1 and does only what an init must, and the child runs the site, an ordinary
process to which the signals plugin, the apps' children and a re-exec restart
behave as anywhere else. The parent

- forwards ``FORWARDED`` signals to the child (the site's own: stop, restart,
  graceful, log reopening, the terminal's),
- reaps every child that ends, orphans included,
- and, once the site's process has ended, exits with its status, or 128 + N
  if signal N killed it, as a shell reports it. The kernel then kills what
  is left in the container.

The signals are blocked before the fork and taken with ``sigwaitinfo``, so
none is lost between the fork and the loop, and no handler runs. The child
gets a process group of its own and, when standard input is a terminal
(``docker run -it``), that terminal: Ctrl-C then reaches the site once,
directly, not a second time through the parent, which a site would take for
"stop now". This is what tini and dumb-init do; with one of them, or
``docker run --init``, sitebus is not PID 1 and none of this happens.
"""

from __future__ import annotations

import contextlib
import os
import signal

from .errors import ProcessError

__all__ = ["FORWARDED", "fork_init"]

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGWINCH,
)


def fork_init() -> int | None:
    """Fork when this process is PID 1: None in the child, which runs the site.

    In the parent it serves as init until the child ends, and returns the
    status to exit with. Outside PID 1 it does nothing and returns None.
    Call it before any thread starts: a fork keeps only the calling thread.
    """
    if os.getpid() != 1:
        return None
    watched = {*FORWARDED, signal.SIGCHLD}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        child = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise ProcessError(f"cannot fork the site's process from PID 1: {exc.strerror}") from exc
    if child == 0:
        _own_group()
        if os.environ.get("LISTEN_PID") == "1":
            # Sockets passed to PID 1 (socket activation into a container) are the site's now.
            os.environ["LISTEN_PID"] = str(os.getpid())
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return None
    return _serve(child, watched)


def _own_group() -> None:
    """Put the site in a process group of its own, in the terminal's foreground if there is one.

    Runs with SIGTTOU blocked (the parent's mask), so that taking the
    terminal from the background does not stop this process.
    """
    os.setpgid(0, 0)
    with contextlib.suppress(OSError):  # no terminal on stdin: nothing to take
        os.tcsetpgrp(0, os.getpgrp())


def _serve(child: int, watched: set[signal.Signals]) -> int:
    """Forward signals to ``child`` and reap every child until ``child`` ends."""
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile: reaped below
                os.kill(child, info.si_signo)
            continue
        status = _reap(child)
        if status is not None:
            return status


def _reap(child: int) -> int | None:
    """Wait for every child that has ended; the exit status of ``child`` if it is one of them.

    SIGCHLD coalesces: one may stand for several ended children, so this
    waits until none is left to collect.
    """
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            found = code if code >= 0 else 128 - code
