"""The Plugin base class and the priority decorator.

A plugin turns a site-wide service into an object: its methods named after
channels become that channel's listeners when ``subscribe()`` is called, and
``unsubscribe()`` removes exactly those again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from .bus import Bus

    F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["BUILTIN_CHANNELS", "Plugin", "StartOrder", "method_name", "priority"]

BUILTIN_CHANNELS = ("start", "stop", "graceful", "exit", "log", "state", "reload", "start_failed")


class StartOrder(IntEnum):
    """The start order of the built-in services: the one table of their priorities.

    Lower starts first and, on ``stop`` and ``exit``, stops last. The order
    says why each sits where it does: the log is ready before anything speaks;
    the process detaches before it writes its PID; an application's own
    resources (a database at ``PIDFILE``, as on CherryPy's bus page, or at
    ``DEFAULT``) open before the sockets are bound; privileged ports are bound
    before privileges drop, and privileges drop before any request is served;
    the health plugin's drain delay stops just before the servers, so they
    still accept while a load balancer takes the site out of rotation;
    background tasks run only once the site serves; and the file watcher
    starts last, so a start that fails is never mistaken for a code change.
    """

    LOGS = 5
    DAEMON = 10
    PIDFILE = 20
    DEFAULT = 50
    THREADS = 55
    SOCKETS = 60
    PRIVILEGES = 65
    SERVERS = 70
    HEALTH = 75
    TASKS = 80
    AUTORELOAD = 90


def priority(value: int) -> Callable[[F], F]:
    """Set the priority a listener is subscribed with (lower runs first at start)."""

    def mark(fn: F) -> F:
        fn.priority = value  # type: ignore[attr-defined]  # plain function attribute, read by Bus.subscribe
        return fn

    return mark


def method_name(channel: str) -> str:
    """The method that listens to ``channel``: every non-identifier character becomes ``_``."""
    return re.sub(r"\W", "_", channel)


class Plugin:
    """Base class for services that live on a bus.

    Methods named after the built-in channels (start, stop, graceful, exit,
    log, state, reload, start_failed) are listeners. Other channels are listed in the class
    attribute ``channels``; a channel that is not a valid identifier, such as
    ``"autoreload.watch"``, is served by the method ``autoreload_watch``.
    ``@priority(n)`` on a method (or a ``priority`` attribute on it) sets its
    priority.
    """

    channels: ClassVar[tuple[str, ...]] = ()
    bus: Bus

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @property
    def _subscribed(self) -> list[tuple[str, Callable[..., Any]]]:
        """What ``subscribe()`` added, made on first use.

        Not set in ``__init__``: a subclass written the CherryPy way, setting
        ``self.bus = bus`` without calling ``super().__init__()``, must work.
        """
        subscribed: list[tuple[str, Callable[..., Any]]]
        subscribed = self.__dict__.setdefault("_sitebus_subscribed", [])
        return subscribed

    def subscribe(self) -> None:
        """Subscribe every listener method of this plugin to its channel."""
        bus = self._bus_or_fail()
        for channel in dict.fromkeys((*BUILTIN_CHANNELS, *self.channels)):
            method = getattr(self, method_name(channel), None)
            if callable(method) and (channel, method) not in self._subscribed:
                bus.subscribe(channel, method)
                self._subscribed.append((channel, method))

    def unsubscribe(self) -> None:
        """Remove every listener that ``subscribe()`` added."""
        subscribed = self._subscribed
        while subscribed:
            channel, method = subscribed.pop()
            self.bus.unsubscribe(channel, method)

    def _bus_or_fail(self) -> Bus:
        bus: Bus | None = getattr(self, "bus", None)
        if bus is None:
            raise TypeError(
                f"{type(self).__name__} has no bus: its __init__ must call "
                "super().__init__(bus) or set self.bus = bus before subscribe()"
            )
        return bus
