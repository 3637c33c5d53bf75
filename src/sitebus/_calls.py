"""Calling listeners one at a time, timed, with an optional deadline each.

``publish`` is the fast path and lives in ``bus.py``; the transitions use the
slower calls here because they record how long every listener took, and
teardown must be able to give up on a wedged listener and move on. The only way
to move on from a call that does not return is to not be inside it, so
teardown listeners run in a helper thread that the caller waits on; when one
overruns, the caller abandons that thread (a daemon, so it cannot hold the
interpreter open) and starts a fresh one for the listeners that remain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ._options import Options
from ._wakeup import Wakeup

TYPE_CHECKING = False  # typing is not imported at run time: see bus.py
if TYPE_CHECKING:
    from typing import Any

    Callback = Callable[..., Any]
    # What a transition keeps of each call: the callback, seconds taken, and
    # the exception if it failed. Plain tuples keep the start and stop paths
    # cheap; Bus.timings turns them into ListenerTiming objects when asked.
    Record = tuple[Callback, float, Exception | None]


class ListenerTiming(Options):
    """How one listener fared in a transition: for start-up reports and status."""

    channel: str
    listener: str
    seconds: float
    error: BaseException | None = None

    @property
    def timed_out(self) -> bool:
        return isinstance(self.error, TimeoutError)


def failures_of(records: list[Record]) -> list[tuple[Callback, Exception]]:
    return [(callback, error) for callback, _, error in records if error is not None]


def call_each(callbacks: Sequence[Callback], *, stop_at_first_error: bool) -> list[Record]:
    """Call each callback in this thread, timing it and catching its ``Exception``."""
    records: list[Record] = []
    clock = time.perf_counter
    for callback in callbacks:
        began = clock()
        try:
            callback()
        except Exception as exc:
            records.append((callback, clock() - began, exc))
            if stop_at_first_error:
                break
        else:
            records.append((callback, clock() - began, None))
    return records


def call_each_with_deadline(
    channel: str,
    callbacks: Sequence[Callback],
    timeout: float,
    wakeup: Wakeup | None = None,
) -> list[Record]:
    """Call each callback in a helper thread, giving up on one after ``timeout`` s.

    A listener that overruns is recorded as failed with a ``TimeoutError`` and
    left running in its abandoned thread. ``KeyboardInterrupt`` or
    ``SystemExit`` raised by a listener is raised again here, in the caller.

    The main thread passes the wake-up pipe that signals write to: the kernel
    may deliver a signal to the helper thread, and only a descriptor wakes the
    main thread then, so that its Python handler runs at once (a lock wait
    would sleep through it).
    """
    records: list[Record] = []
    remaining = list(callbacks)
    while remaining:
        runner = _Runner(channel, remaining, wakeup)
        runner.start()
        wedged = runner.wait(timeout)
        records.extend(runner.records)
        if runner.interrupt is not None:
            raise runner.interrupt
        if wedged is None:
            break
        error = TimeoutError(f"still running after {timeout:g} s; abandoned")
        records.append((remaining[wedged], timeout, error))
        remaining = remaining[wedged + 1 :]
    return records


class _Runner(threading.Thread):
    """Calls listeners in order and reports progress to the waiting caller."""

    def __init__(self, channel: str, callbacks: list[Callback], wakeup: Wakeup | None) -> None:
        super().__init__(name=f"sitebus-{channel}", daemon=True)
        self._wakeup = wakeup
        self._callbacks = callbacks
        self._progress = threading.Condition(threading.Lock())
        self._current = 0
        self._began = time.monotonic()
        self._done = False
        self._abandoned = False
        self.records: list[Record] = []
        self.interrupt: BaseException | None = None

    def run(self) -> None:
        try:
            for index, callback in enumerate(self._callbacks):
                began = time.perf_counter()
                error: Exception | None = None
                try:
                    callback()
                except Exception as exc:
                    error = exc
                except BaseException as exc:  # SystemExit from a listener: hand it over
                    with self._progress:
                        if not self._abandoned:
                            self.interrupt = exc
                    return
                with self._progress:
                    if self._abandoned:
                        return
                    self.records.append((callback, time.perf_counter() - began, error))
                    # The next listener's clock starts in the same locked step that
                    # records this one, so the waiter never blames a finished call.
                    self._current, self._began = index + 1, time.monotonic()
                    self._progress.notify()
                self._ping()
        finally:
            with self._progress:
                self._done = True
                self._progress.notify()
            self._ping()

    def _ping(self) -> None:
        if self._wakeup is not None:
            self._wakeup.ping()

    def wait(self, timeout: float) -> int | None:
        """Wait for the listeners; return the index of a wedged one, else None."""
        while True:
            with self._progress:
                if self._done:
                    return None
                left = self._began + timeout - time.monotonic()
                if left <= 0:
                    self._abandoned = True
                    return self._current
                if self._wakeup is None:
                    self._progress.wait(left)
                    continue
            # The runner pings after every step, so a step finished between the
            # check above and this wait leaves a byte in the pipe: no lost wake-up.
            self._wakeup.wait(left)
