"""The watchdog: names a teardown listener that overruns, and ends an exit that wedges.

Stop and exit listeners run in the thread that called ``stop()`` or
``exit()`` (the main thread, under ``block()``), so that a resource opened in a
start listener closes in the thread that opened it: a ``sqlite3`` connection,
for one, refuses to be used from any other thread. Nothing can move a thread on
from inside a call that does not return, so a wedged listener is bounded from
outside, by one daemon thread per process that watches every teardown under
way:

- a listener still running ``listener_timeout`` seconds after it began is
  named in the bus's log, once;
- an ``exit()`` still running ``exit_timeout`` seconds after it began ends
  the process: the stack of every thread goes to standard error, then
  ``os._exit(1)``. This is the one hard exit in sitebus, and it is the point:
  the process was exiting anyway, its main thread is stuck in a listener, and
  nothing else would ever end it. It writes straight to file descriptor 2,
  not through ``logging``, whose locks the wedged thread may hold.

Watching costs a teardown next to nothing: the bus writes which listener runs
into a plain attribute, and the watchdog thread is woken (one notify) only
when it is idle; while it sleeps towards some earlier deadline it rescans
when that deadline comes, and finds the listener running by then.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import listener_name

__all__ = ["Watch", "unwatch", "watch"]

EXIT_STATUS = 1
"""The status of a process whose exit overran its bound."""


class Watch:
    """One teardown being watched; its thread sets ``current`` before each listener.

    ``current`` is ``(channel, callback, began)`` (``time.monotonic()``) or None
    between listeners. ``overrun(channel, callback, seconds)`` is called from
    the watchdog thread for a listener past ``listener_timeout``; the whole
    teardown may last until ``deadline`` (monotonic seconds), after which the
    process ends.
    """

    __slots__ = ("current", "deadline", "listener_timeout", "overrun", "reported")

    def __init__(
        self,
        listener_timeout: float | None,
        overrun: Callable[[str, Callable[..., Any], float], None],
        *,
        deadline: float | None = None,
    ) -> None:
        self.listener_timeout = listener_timeout
        self.overrun = overrun
        self.deadline = deadline
        self.current: tuple[str, Callable[..., Any], float] | None = None
        self.reported: tuple[str, Callable[..., Any], float] | None = None

    def _check(self, now: float) -> tuple[Callable[[], None] | None, float | None]:
        """What to do now (or None) and when to look again (or None: not before a notify)."""
        action: Callable[[], None] | None = None
        wake_at: float | None = None
        current = self.current
        if current is None and self.listener_timeout is not None:
            # Between listeners: none that begins from now on is due earlier.
            wake_at = now + self.listener_timeout
        elif current is not None and self.listener_timeout is not None:
            if current is self.reported:
                # Still the same wedged listener: look again later for the next one.
                wake_at = now + self.listener_timeout
            elif now >= current[2] + self.listener_timeout:
                self.reported = current
                channel, callback, began = current
                action = lambda: self.overrun(channel, callback, now - began)  # noqa: E731
            else:
                wake_at = current[2] + self.listener_timeout
        if self.deadline is not None:
            if now >= self.deadline:
                return (lambda: _end_process(current)), None
            wake_at = self.deadline if wake_at is None else min(wake_at, self.deadline)
        return action, wake_at


def _end_process(current: tuple[str, Callable[..., Any], float] | None) -> None:
    where = (
        f" in listener {listener_name(current[1])} on {current[0]!r}" if current is not None else ""
    )
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
    """The process's one watchdog thread and the teardowns it watches."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # After a fork the thread is gone and a lock may have been held by it.
        self._changed = threading.Condition(threading.Lock())
        self._watches: list[Watch] = []
        self._idle = False
        self._thread: threading.Thread | None = None

    def watch(self, watch: Watch) -> None:
        with self._changed:
            self._watches.append(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sitebus-watchdog", daemon=True
                )
                self._thread.start()
            elif self._idle or watch.deadline is not None:
                self._changed.notify()

    def unwatch(self, watch: Watch) -> None:
        with self._changed:
            self._watches = [w for w in self._watches if w is not watch]

    def _run(self) -> None:
        # Signals are for the main thread, where their Python handlers run anyway.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            actions: list[Callable[[], None]] = []
            with self._changed:
                now = time.monotonic()
                wake_at: float | None = None
                for watch in self._watches:
                    action, when = watch._check(now)
                    if action is not None:
                        actions.append(action)
                    if when is not None:
                        wake_at = when if wake_at is None else min(wake_at, when)
                if not actions:
                    # Scanning and sleeping under one lock: a watch added meanwhile
                    # waits for this sleep to begin, then notifies it.
                    self._idle = wake_at is None
                    self._changed.wait(None if wake_at is None else wake_at - now)
                    self._idle = False
                    continue
            for action in actions:
                try:
                    action()
                except Exception:  # a broken log handler must not end the watchdog
                    pass


_WATCHDOG = _Watchdog()
watch = _WATCHDOG.watch
unwatch = _WATCHDOG.unwatch
