"""``cherrypy.engine`` replaced by a compat bus, with CherryPy's own services left off.

CherryPy makes its engine when it is imported and subscribes to it its HTTP
server (``cherrypy.server``), its autoreloader, its thread manager and a
config checker; ``quickstart`` adds its signal handler. In a site, sitebus
owns the servers, the signals and reloading, so ``install()`` puts a
``wspbus.Bus`` in the place of ``cherrypy.engine`` and moves every listener
over but those: CherryPy's HTTP server (and any other ``ServerAdapter``)
never binds, its autoreloader never polls, its signal handler is never set.
Their attributes on the engine (``engine.autoreload``,
``engine.signal_handler``, ``engine.signals``) become stand-ins that say in
the log, once, that sitebus owns the job, so that an app's config
(``engine.autoreload.on = True``) or a deployment script
(``engine.signals.subscribe()``) runs without starting them. CherryPy's
``log`` listener, which copies the engine's messages to ``cherrypy.log``,
stays behind too: the site's log carries them, and ``cherrypy.log``'s own
lines (errors, the access log) reach it through Python's ``logging``, their
screen handlers off (``log.screen = True`` in an app's config turns them on
again).

Install before the app's modules are imported (the site runner does, for a
site that mounts a CherryPy app): a module that took ``from cherrypy import
engine`` earlier keeps the old engine, which nothing ever starts. Plugins
already subscribed to the old engine are moved and their ``bus`` attribute
pointed at the new one. The replacement is process-wide, like
``cherrypy.engine`` itself, and done once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import MissingExtraError
from .wspbus import Bus

__all__ = ["SitebusOwns", "WatchedFiles", "install"]

_installing = threading.Lock()


class WatchedFiles(set[str]):
    """``engine.autoreload.files``: each path added is handed to sitebus's autoreload too.

    CherryPy registers its config files there, and apps their templates;
    they are published on ``autoreload.watch``, which the site's
    ``[autoreload]`` plugin listens to. ``CherryPyEngine`` publishes those
    added before it put the engine on the site bus.
    """

    def __init__(self, bus: Bus) -> None:
        super().__init__()
        self._bus = bus

    def add(self, path: str) -> None:
        if path not in self:
            super().add(path)
            self._bus.publish("autoreload.watch", path)


class SitebusOwns:
    """Stands in for a CherryPy engine service whose job sitebus does in a site.

    Takes any attribute (``frequency``, ``match``, ``handlers``); ``files``
    collects what is registered for autoreload (see ``WatchedFiles``).
    ``subscribe()`` starts nothing and says once, in the log, where the job
    is done instead.
    """

    def __init__(self, bus: Bus, what: str, instead: str) -> None:
        self.bus = bus
        self.what = what
        self.instead = instead
        self.files = WatchedFiles(bus)
        self.handlers: dict[str, Any] = {}
        self._said = False

    def __repr__(self) -> str:
        return f"<SitebusOwns {self.what}>"

    def subscribe(self) -> None:
        if not self._said:
            self._said = True
            self.bus.log(f"CherryPy's {self.what} stays off: sitebus owns it ({self.instead})")

    def unsubscribe(self) -> None:
        """Nothing was subscribed."""


def install() -> Bus:
    """Make ``cherrypy.engine`` a compat ``Bus`` (once per process) and return it.

    Raises ``MissingExtraError`` when CherryPy is not installed.
    """
    try:
        import cherrypy
    except ModuleNotFoundError as exc:
        if exc.name != "cherrypy":
            raise
        raise MissingExtraError(
            "mounting a CherryPy application needs CherryPy: pip install 'cherrypy>=18'"
        ) from exc
    with _installing:
        old = cherrypy.engine
        if isinstance(old, Bus):
            return old
        new = Bus()
        _move_listeners(cherrypy, old, new)
        new.thread_manager = getattr(old, "thread_manager", None)  # type: ignore[attr-defined]  # CherryPy's engine attributes
        new.autoreload = SitebusOwns(new, "autoreloader", "[autoreload] in the site file")  # type: ignore[attr-defined]
        new.signal_handler = SitebusOwns(new, "signal handler", "[signals] in the site file")  # type: ignore[attr-defined]
        new.signals = new.signal_handler  # type: ignore[attr-defined]
        # CherryPy's error and access logs reach the site's log through Python's
        # logging; their own screen handlers would print every line twice.
        cherrypy.log.screen = False
        cherrypy.engine = new
        return new


def _move_listeners(cherrypy: Any, old: Any, new: Bus) -> None:
    """Every listener of ``old`` onto ``new`` at its priority, but what sitebus owns."""
    from cherrypy.process.servers import ServerAdapter

    owned = [getattr(old, name, None) for name in ("autoreload", "signal_handler")]
    owned.append(getattr(old, "console_control_handler", None))
    for channel in old.listeners:
        new.listeners.setdefault(channel, set())
    for channel, callbacks in list(old.listeners.items()):
        for callback in list(callbacks):
            owner = getattr(callback, "__self__", None)
            if isinstance(owner, ServerAdapter) or any(owner is o for o in owned if o is not None):
                continue  # the server, autoreloader and signal handler stay off
            if (
                getattr(callback, "__module__", None) == "cherrypy"
                and getattr(callback, "__name__", None) == "_buslog"
            ):
                continue  # the site's log carries the engine's messages
            priority = old._priorities.get((channel, callback), 50)
            old.unsubscribe(channel, callback)
            new.subscribe(channel, callback, priority)
            if owner is not None and getattr(owner, "bus", None) is old:
                owner.bus = new
    left = sorted({repr(cb) for callbacks in old.listeners.values() for cb in callbacks})
    if left:
        new.log(
            f"Left on CherryPy's own engine, which never starts: {', '.join(left)}", logging.DEBUG
        )
