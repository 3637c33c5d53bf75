"""The watchdog: names a teardown listener that overruns, and ends an exit that wedges.

Stop and exit listeners run in the thread that called ``stop()`` or
``exit()`` (the main thread, under ``block()``), so that a resource opened in a
start listener closes in the thread that opened it: a ``sqlite3`` connection,
for one, refuses to be used from any other thread. Nothing can move a thread on
from inside a call that does not return, so a wedged listener is bounded from
outside, by one daemon thread per process that watches every bus:

- a listener still running ``listener_timeout`` seconds after it began is
  named in the bus's log, once;
- an ``exit()`` still running ``exit_timeout`` seconds after it began ends
  the process: the stack of every thread goes to standard error, then
  ``os._exit(1)``. This is the one hard exit in sitebus, and it is the point:
  the process was exiting anyway, its main thread is stuck in a listener, and
  nothing else would ever end it. It writes straight to file descriptor 2,
  not through ``logging``, whose locks the wedged thread may hold.

Watching costs a teardown next to nothing, which matters because tests and
frameworks start and stop buses by the thousand: each bus has one ``Watch``,
registered when the bus is made; a teardown marks it active and writes which
listener runs into a plain attribute, and takes the watchdog's lock only to
wake it when it sleeps with nothing to watch. While some teardown is active
the watchdog sleeps until the earliest moment a listener could overrun, then
looks again.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .errors import listener_name

__all__ = ["EXIT_STATUS", "Watch"]

EXIT_STATUS = 1
"""The status of a process whose exit overran its bound."""

Running = tuple[str, Callable[..., Any], float]  # channel, listener, began (perf_counter)


class Watch:
    """What the watchdog knows of one bus's teardowns.

    The teardown's thread calls ``begin()``, sets ``current`` before each
    listener (``(channel, callback, time.perf_counter())``, or None between
    them) and calls ``end()``; a start sets ``current`` too, without
    ``begin()``: the watchdog ignores it, ``Bus.running_listener`` reports
    it. ``overrun(channel, callback, seconds)`` is called from the watchdog
    thread for a listener past ``listener_timeout``; a teardown begun with a
    ``deadline`` (``perf_counter`` seconds) may last until then, after which
    the process ends.
    """

    __slots__ = ("__weakref__", "active", "current", "deadline", "overrun", "reported", "timeout")

    def __init__(self, overrun: Callable[[str, Callable[..., Any], float], None]) -> None:
        self.overrun = overrun
        self.timeout: float | None = None
        self.active = False
        self.deadline: float | None = None
        self.current: Running | None = None
        self.reported: Running | None = None
        _WATCHDOG.add(self)

    def begin(self, listener_timeout: float | None, deadline: float | None = None) -> None:
        """A teardown begins in this thread (``deadline``: when the process must end)."""
        self.timeout = listener_timeout
        self.current = None
        self.deadline = deadline
        self.active = listener_timeout is not None or deadline is not None
        if self.active:
            _WATCHDOG.wake(listener_timeout, urgent=deadline is not None)

    def end(self) -> None:
        self.active = False
        self.current = self.deadline = None

    def _check(self, now: float) -> tuple[Callable[[], None] | None, float | None]:
        """What to do now (or None) and when to look again (None: not this one's business)."""
        if not self.active:
            return None, None
        action: Callable[[], None] | None = None
        wake_at: float | None = None
        current, timeout, deadline = self.current, self.timeout, self.deadline
        if timeout is not None:
            if current is None or current is self.reported:
                # Between listeners, or still in one already named: none that
                # begins from now on can overrun before now + timeout.
                wake_at = now + timeout
            elif now >= current[2] + timeout:
                self.reported = current
                channel, callback, began = current
                action = lambda: self.overrun(channel, callback, now - began)  # noqa: E731
                wake_at = now + timeout
            else:
                wake_at = current[2] + timeout
        if deadline is not None:
            if now >= deadline:
                return (lambda: _end_process(current)), None
            wake_at = deadline if wake_at is None else min(wake_at, deadline)
        return action, wake_at


def _end_process(current: Running | None) -> None:
    where = f" in listener {listener_name(current[1])} on {current[0]!r}" if current else ""
    message = (
        f"sitebus: the exit overran its bound{where}; stacks follow; "
        f"ending the process with status {EXIT_STATUS}\n"
    )
    try:
        os.write(2, message.encode(errors="replace"))
        faulthandler.dump_traceback(file=sys.__stderr__ or 2, all_threads=True)
    finally:
        os._exit(EXIT_STATUS)


class _Watchdog:
    """The process's one watchdog thread and the watches it scans."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # After a fork the thread is gone, and its lock may have been held.
        self._changed = threading.Condition(threading.Lock())
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._idle = True  # asleep with nothing to watch, or not started
        self._wake_at = 0.0  # when it wakes by itself next (perf_counter), if not idle
        self._thread: threading.Thread | None = None

    def add(self, watch: Watch) -> None:
        with self._changed:
            self._watches.add(watch)

    def wake(self, timeout: float | None, *, urgent: bool) -> None:
        """Make the watchdog look at the watches now, if it might otherwise be late.

        The caller set ``active`` first; the watchdog sets ``_idle`` before it
        looks at ``active`` under its lock. So either it sees this teardown,
        or this sees it idle and notifies, which waits for the lock until the
        watchdog sleeps. A watchdog asleep until some other bus's moment is
        woken too if this teardown's listener could overrun before that.
        """
        soon = timeout is not None and perf_counter() + timeout < self._wake_at
        if not (self._idle or urgent or soon):
            return
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sitebus-watchdog", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        # Signals are for the main thread, where their Python handlers run anyway.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            actions: list[Callable[[], None]] = []
            with self._changed:
                self._idle = True
                now = perf_counter()
                wake_at: float | None = None
                for watch in list(self._watches):
                    action, when = watch._check(now)
                    if action is not None:
                        actions.append(action)
                    if when is not None:
                        wake_at = when if wake_at is None else min(wake_at, when)
                if not actions:
                    self._idle = wake_at is None
                    self._wake_at = now if wake_at is None else wake_at
                    self._changed.wait(None if wake_at is None else wake_at - now)
                    continue
                self._idle = False
            for action in actions:
                with contextlib.suppress(Exception):  # a broken log handler must not end us
                    action()


_WATCHDOG = _Watchdog()
