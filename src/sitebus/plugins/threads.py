"""Per-thread lifecycle for request threads: ``start_thread`` and ``stop_thread``.

An application that keeps one resource per request thread (a database
connection, a template cache) needs to know when a thread begins serving and
when it is done, and it needs every such resource released when the site
stops. Servers announce their threads on the ``acquire_thread`` and
``release_thread`` channels (or call the methods); this plugin numbers them and
publishes ``start_thread(index)`` and ``stop_thread(index)``.

Indexes: the live threads always hold distinct indexes, numbered from 1 in
order of first acquire. By default a released index is handed to the next new
thread (the smallest free one), so a pool that replaces its workers keeps the
numbers between 1 and its size and an application can use the index as a slot
in a fixed table. CherryPy numbers threads the same way but computes the next
number from the count of live threads, which can give a new thread the number
of one still running; here that cannot happen. ``reuse_indexes=False`` numbers
every thread afresh instead, for logs that must never repeat a number.

An index is only handed out again once its ``stop_thread`` listeners have
returned, so no ``start_thread(n)`` ever overlaps a ``stop_thread(n)``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .._options import Options
from ..errors import ChannelFailures
from ..plugin import Plugin, StartOrder, priority

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["Threads", "ThreadsOptions"]


class ThreadsOptions(Options):
    """How threads are numbered.

    ``reuse_indexes``: give a new thread the smallest index no live thread
    holds (True), or a number never used before in this process (False).
    """

    reuse_indexes: bool = True


class _Held:
    """One known thread: its index, and whether its start_thread is still running."""

    __slots__ = ("index", "starting")

    def __init__(self, index: int) -> None:
        self.index = index
        self.starting = True


class Threads(Plugin):
    """Numbers request threads and publishes their start and stop; thread-safe.

    Contract: every ``start_thread(n)`` is followed by exactly one
    ``stop_thread(n)``: from the thread itself when it releases, from the
    stopping thread when the bus stops (or exits) first, or from the next
    thread to acquire when the holder ended without releasing.
    """

    channels: ClassVar[tuple[str, ...]] = ("acquire_thread", "release_thread")

    def __init__(self, bus: Bus, options: ThreadsOptions | None = None) -> None:
        super().__init__(bus)
        self.options = options or ThreadsOptions()
        self._changed = threading.Condition(threading.Lock())
        self._held: dict[threading.Thread, _Held] = {}
        self._releasing: set[int] = set()
        self._numbers = itertools.count(1)

    def __repr__(self) -> str:
        return f"<Threads held={sorted(h.index for h in self._held.values())}>"

    # -- the channels -------------------------------------------------------

    def acquire_thread(self) -> int:
        """Announce the calling thread; return its index.

        The first call from a thread publishes ``start_thread(index)`` in that
        thread; later calls return the same index and publish nothing. A
        failing ``start_thread`` listener raises ``ChannelFailures`` here, and
        the thread still holds its index, so its release publishes
        ``stop_thread`` for whatever the other listeners set up.
        """
        thread = threading.current_thread()
        with self._changed:
            held = self._held.get(thread)
            if held is not None:
                return held.index
            ended = self._take_ended_locked()
        if ended:  # first, so that their indexes can go to this thread
            self._release_ended(ended)
        with self._changed:
            held = self._held[thread] = _Held(self._next_index_locked())
        try:
            self.bus.publish("start_thread", held.index)
        finally:
            with self._changed:
                held.starting = False
                self._changed.notify_all()
        return held.index

    def release_thread(self) -> None:
        """The calling thread is done: publish ``stop_thread(index)`` in it.

        Does nothing for a thread that holds no index (never acquired, or
        already released, for instance by the bus stopping).
        """
        thread = threading.current_thread()
        with self._changed:
            held = self._held.pop(thread, None)
            if held is None:
                return
            self._releasing.add(held.index)
        self._publish_stops([held.index])

    def current_index(self) -> int | None:
        """The calling thread's index, or None if it holds none."""
        held = self._held.get(threading.current_thread())
        return held.index if held is not None else None

    def held(self) -> dict[str, int]:
        """Thread name → index for every thread holding one, for status pages."""
        with self._changed:
            return {thread.name: held.index for thread, held in self._held.items()}

    # -- the bus ------------------------------------------------------------

    @priority(StartOrder.THREADS)
    def stop(self) -> None:
        """Release every thread the plugin knows, publishing ``stop_thread`` for each.

        Runs in the stopping thread, not in the threads themselves: listeners
        must be able to close a resource from another thread. Waits for a
        ``start_thread`` still running, so its resource is not missed.
        """
        self.release_all()

    @priority(StartOrder.THREADS)
    def exit(self) -> None:
        """Threads acquired while the bus was stopped are released at exit too."""
        self.release_all()

    def release_all(self) -> None:
        """Release every known thread; raise one ``ChannelFailures`` after all ran."""
        me = threading.current_thread()
        with self._changed:
            snapshot = list(self._held.items())
            # Not our own start_thread, if a listener of it stops the bus.
            others = [h for t, h in snapshot if t is not me]
            self._changed.wait_for(lambda: not any(h.starting for h in others))
            indexes: list[int] = []
            for thread, held in snapshot:
                if self._held.get(thread) is held:
                    del self._held[thread]
                    indexes.append(held.index)
            self._releasing.update(indexes)
        self._publish_stops(sorted(indexes))

    # -- helpers ------------------------------------------------------------

    def _next_index_locked(self) -> int:
        if not self.options.reuse_indexes:
            return next(self._numbers)
        taken = {h.index for h in self._held.values()} | self._releasing
        return next(i for i in itertools.count(1) if i not in taken)

    def _take_ended_locked(self) -> list[int]:
        ended = [(t, h) for t, h in self._held.items() if not t.is_alive()]
        for thread, _ in ended:
            del self._held[thread]
        indexes = [h.index for _, h in ended]
        self._releasing.update(indexes)
        return indexes

    def _release_ended(self, indexes: list[int]) -> None:
        """Threads that ended without releasing: their failures are not the caller's."""
        self.bus.log(
            f"Releasing thread index(es) {indexes}: their threads ended without releasing",
            logging.WARNING,
        )
        try:
            self._publish_stops(indexes)
        except ChannelFailures as failures:
            self.bus.log(str(failures), logging.ERROR)

    def _publish_stops(self, indexes: list[int]) -> None:
        """Publish ``stop_thread`` for each index, then free them all for reuse."""
        failures: list[tuple[Callable[..., Any], Exception]] = []
        try:
            for index in indexes:
                try:
                    self.bus.publish("stop_thread", index)
                except ChannelFailures as group:
                    failures.extend(group.failures)
        finally:
            with self._changed:
                self._releasing.difference_update(indexes)
        if failures:
            raise ChannelFailures("stop_thread", failures)
