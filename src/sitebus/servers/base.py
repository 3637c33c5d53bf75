"""The Server plugin: one engine serving one app on the bus's sockets.

An engine adapter only knows how to serve a list of listening sockets and how
to stop accepting and finish what is in flight; this base class ties that to
the bus. It serves at ``StartOrder.SERVERS``, after the sockets are bound and
privileges dropped, and stops in reverse order, before the sockets close.

A graceful stop, in order: hold off new connections (``Sockets.hold_off``),
let the engine accept what the kernel already queued (``wait_drained``), stop
accepting, let in-flight requests finish within ``graceful_timeout``, close.
During a restart the first two steps are skipped: the sockets stay open for
the next image and new connections wait in their queue for it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar

from .._options import Options, check_range
from ..bus import Bus
from ..errors import ConfigError, MissingExtraError, SitebusError
from ..plugin import Plugin, StartOrder, priority
from .sockets import Sockets

App = Callable[..., Any]

__all__ = ["ENGINES", "Server", "ServerOptions", "as_asgi", "is_asgi", "load_engine"]

# name -> (module, class, pip extra); modules are imported only when chosen.
ENGINES: dict[str, tuple[str, str, str | None]] = {
    "cheroot": ("sitebus.servers.cheroot", "CherootServer", "cheroot"),
    "uvicorn": ("sitebus.servers.uvicorn", "UvicornServer", "uvicorn"),
    "waitress": ("sitebus.servers.waitress", "WaitressServer", "waitress"),
    "wsgiref": ("sitebus.servers.wsgiref", "WsgirefServer", None),
}


# A day: far beyond any sensible stop, and far within what timeouts and clocks can take.
GRACEFUL_TIMEOUT_MAX = 86400.0

# What a stop needs beyond the graceful timeout: uvicorn's lifespan shutdown
# and the engines' last clean-up. The bus's exit_timeout must leave it.
_STOP_SLACK = 5.0


class ServerOptions(Options):
    """How an engine serves.

    ``graceful_timeout``: seconds a stop waits for in-flight requests (30, as
    gunicorn). ``threads``: request threads for the engines that pool them
    (cheroot, waitress, and uvicorn for a WSGI app; not wsgiref).
    ``certfile``/``keyfile``: TLS, for the engines that support it.
    """

    graceful_timeout: float = 30.0
    threads: int = 10
    certfile: str | None = None
    keyfile: str | None = None

    def __post_init__(self) -> None:
        check_range(
            self, "graceful_timeout", 0, GRACEFUL_TIMEOUT_MAX, "seconds from 0 to 86400 (a day)"
        )
        check_range(self, "threads", 1, 10_000, "a number of threads from 1 to 10000")


class Server(Plugin):
    """Serves ``app`` on every listener of ``sockets``; subclasses are the engines.

    A subclass implements ``serve(socks)``, which returns once the engine
    accepts on every socket, and ``shutdown(deadline)``, which stops accepting,
    waits for in-flight requests until ``deadline`` (monotonic) and releases
    the engine. Engines get duplicates of the bus's sockets and may close them;
    they must never ``shutdown()`` a listener, which would reset its queue.
    """

    engine: ClassVar[str] = ""
    tls_supported: ClassVar[bool] = False
    serves_asgi: ClassVar[bool] = False  # else WSGI only
    pools_threads: ClassVar[bool] = True  # False: ``threads`` does not apply

    def __init__(
        self, bus: Bus, app: App, sockets: Sockets, options: ServerOptions | None = None
    ) -> None:
        super().__init__(bus)
        self.app = app
        self.sockets = sockets
        if is_asgi(app) and not self.serves_asgi:
            raise SitebusError(
                f"The {self.engine} engine serves WSGI apps, and this app is an ASGI app "
                "(a coroutine function): serve it with the uvicorn engine"
            )
        self.options = options or ServerOptions()
        bound = bus.exit_timeout
        if bound is not None and self.options.graceful_timeout + _STOP_SLACK > bound:
            raise ConfigError(
                f"graceful_timeout {self.options.graceful_timeout:g} s leaves no time within "
                f"the bus's exit_timeout of {bound:g} s, which would cut the stop short: "
                f"make the bus with exit_timeout above "
                f"{self.options.graceful_timeout + _STOP_SLACK:g}"
            )
        if (self.options.certfile or self.options.keyfile) and not self.tls_supported:
            raise SitebusError(f"The {self.engine} engine does not support TLS certificates")
        for path in filter(None, (self.options.certfile, self.options.keyfile)):
            if not os.path.isfile(path):
                raise SitebusError(f'TLS file "{path}" does not exist or is not a file')
        self._serving = False

    @property
    def tls(self) -> bool:
        return self.options.certfile is not None

    def request_app(self) -> App:
        """The app as the engine calls it: a WSGI app first announces its request thread.

        Each request publishes ``acquire_thread`` in the thread that serves it,
        as CherryPy's do, so the ``Threads`` plugin sees every request thread
        (a thread's first acquire publishes ``start_thread``, later ones
        nothing). Pool threads are released when the bus stops; an engine
        whose threads end with their connection releases them itself.
        """
        app = self.app
        if is_asgi(app):
            return app  # requests run in the event loop's thread, not a thread each
        publish = self.bus.publish

        def announcing_thread(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            publish("acquire_thread")
            return app(environ, start_response)

        return announcing_thread

    @priority(StartOrder.SERVERS)
    def start(self) -> None:
        socks = [listener.socket.dup() for listener in self.sockets.listeners]
        try:
            self.serve(socks)
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        self._serving = True
        scheme = "https" if self.tls else "http"
        for listener in self.sockets.listeners:
            where = listener.url.replace("http", scheme, 1)
            self.bus.log(f"{self.engine} serving on {where}")

    @priority(StartOrder.SERVERS)
    def stop(self) -> None:
        if not self._serving:
            return
        self._serving = False
        deadline = time.monotonic() + self.options.graceful_timeout
        if not self.bus.restarting:
            self.sockets.hold_off()
            if not self.sockets.wait_drained(deadline):
                self.bus.log("Connections still queued at the graceful timeout", logging.WARNING)
        self.shutdown(deadline)

    def serve(self, socks: list[socket.socket]) -> None:
        raise NotImplementedError

    def shutdown(self, deadline: float) -> None:
        raise NotImplementedError


def load_engine(name: str) -> type[Server]:
    """The Server class of engine ``name``, importing it only now."""
    try:
        module_name, class_name, extra = ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise SitebusError(f'Unknown engine "{name}": expected one of {known}') from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None or exc.name is None or exc.name.startswith("sitebus"):
            raise
        raise MissingExtraError(
            f"The {name} engine needs {exc.name}: pip install 'sitebus[{extra}]'"
        ) from exc
    engine: type[Server] = getattr(module, class_name)
    return engine


def as_asgi(app: App, *, threads: int = 10) -> App:
    """``app`` as an ASGI app: itself if it is one, else a WSGI app adapted by a2wsgi.

    a2wsgi's ``WSGIMiddleware`` runs each WSGI request on a pool of
    ``threads`` threads and streams its body back to the event loop, so one
    ASGI engine can serve WSGI and ASGI apps side by side. The pool's threads
    are daemons, as the WSGI engines' are: a request still running when the
    process exits does not hold the exit.
    """
    if is_asgi(app):
        return app
    try:
        from a2wsgi import WSGIMiddleware  # the uvicorn extra brings it
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "Serving a WSGI app on an ASGI engine needs a2wsgi: pip install 'sitebus[uvicorn]'"
        ) from exc
    from ._daemon_pool import DaemonThreadPool  # only with a2wsgi

    adapter = WSGIMiddleware(app, workers=threads)
    adapter.executor.shutdown(wait=False)  # its own pool, which has started no thread yet
    # a2wsgi only hands it to loop.run_in_executor, which needs submit() alone.
    adapter.executor = DaemonThreadPool(threads, "sitebus-wsgi")  # type: ignore[assignment]  # see above
    return adapter


def is_asgi(app: App) -> bool:
    """True for an ASGI application: a coroutine function, or an object with one as __call__.

    Bound methods and ``functools.partial`` count as what they wrap.
    """
    call = getattr(type(app), "__call__", None)  # noqa: B004  # the method itself, not callable()
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call)
