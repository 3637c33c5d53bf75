"""Calling listeners one at a time, timed, each failure kept.

``publish`` is the fast path and lives in ``bus.py``; the transitions use the
slower call here because they record how long every listener took, and tell
the watchdog (``_watchdog``) which listener is running, so that one that
wedges a teardown can be named.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._options import Options

if TYPE_CHECKING:
    from ._watchdog import Watch

Callback = Callable[..., Any]
# What a transition keeps of each call: the callback, seconds taken, and the
# exception if it failed. Plain tuples keep the start and stop paths cheap;
# Bus.timings turns them into ListenerTiming objects when asked.
Record = tuple[Callback, float, Exception | None]


class ListenerTiming(Options):
    """How one listener fared in a transition: for start-up reports and status."""

    channel: str
    listener: str
    seconds: float
    error: BaseException | None = None


def failures_of(records: list[Record]) -> list[tuple[Callback, Exception]]:
    return [(callback, error) for callback, _, error in records if error is not None]


def call_each(
    channel: str,
    callbacks: Sequence[Callback],
    *,
    stop_at_first_error: bool,
    watch: Watch | None = None,
) -> list[Record]:
    """Call each callback in this thread, timing it and catching its ``Exception``.

    With a ``watch``, each call is announced to the watchdog before it begins.
    ``KeyboardInterrupt`` and ``SystemExit`` propagate at once.
    """
    records: list[Record] = []
    clock = time.perf_counter
    try:
        for callback in callbacks:
            began = clock()
            if watch is not None:
                watch.current = (channel, callback, began)
            try:
                callback()
            except Exception as exc:
                records.append((callback, clock() - began, exc))
                if stop_at_first_error:
                    break
            else:
                records.append((callback, clock() - began, None))
    finally:
        if watch is not None:
            watch.current = None
    return records
