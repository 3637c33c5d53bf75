"""Health: liveness and readiness probes that follow the bus, and a drain delay at stop.

A load balancer, or Kubernetes removing a pod from a Service's endpoints,
learns that a site is going away only some time after the site learns it.
If the servers stopped accepting at once, the connections sent meanwhile
would be refused. So, from the moment the bus starts stopping, readiness
answers 503, and the stop waits ``drain_delay`` seconds, serving as usual,
before the servers stop accepting: by then the balancer has stopped sending.

The probes are answered in front of the site's apps, by wrapping the site's
one app (``health.wsgi(app)`` or ``health.asgi(app)``), so an app never sees
those paths, and a middleware that requires a login cannot make a probe fail:

- ``ready`` (``/readyz``): 200 while the bus is STARTED; 503 before the start
  is done and from the moment a stop begins (its ``state`` is STOPPING
  before any stop listener runs).
- ``live`` (``/healthz``): 200 while the process carries out requests and
  its main thread is not stuck in a transition: STARTED, with no graceful
  reload holding the bus longer than ``LIVE_WAIT`` seconds, and all through
  a stop (a drain must not get the process killed); 503 otherwise.

Both answer GET and HEAD with a short plain-text body and
``Cache-Control: no-store``; other methods get 405.

The drain delay is a stop listener at ``StartOrder.HEALTH``, which stops just
before the servers (``SERVERS``). It is skipped on a restart (the sockets stay
open across the re-exec: nothing is refused) and when the start never
finished (a rollback: nobody was sent traffic). It waits in the thread that
stops the bus, the main thread under ``block()``, where a signal handler that
raises ends it: with the signals plugin, a second Ctrl-C stops at once
(status 1), as it does for any stop; a repeated SIGTERM coalesces and waits.

Time is a seam, as for the tasks plugin: ``HealthOptions(clock=...)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from .._options import MAX_SECONDS, Options, check_range
from ..bus import State
from ..errors import ConfigError
from ..plugin import Plugin, StartOrder, priority
from .tasks import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["LIVE_WAIT", "Health", "HealthOptions"]

LIVE_WAIT = 0.5
"""Seconds a liveness probe waits for a transition in progress (a graceful
reload) to let go of the bus before it answers 503: within the 1 s that
Kubernetes gives a probe by default."""

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]

_STATUS_LINES = {200: "200 OK", 405: "405 Method Not Allowed", 503: "503 Service Unavailable"}


class HealthOptions(Options):
    """Where the probes answer and how long a stop drains.

    ``live`` and ``ready``: the paths of the liveness and readiness probes,
    each starting with ``/``, not the same. ``drain_delay``: seconds a stop
    keeps serving, readiness answering 503, before the servers stop
    accepting; 0 for none. ``clock``: the time source and sleep (a seam for
    tests; see ``sitebus.plugins.tasks.Clock``).
    """

    live: str = "/healthz"
    ready: str = "/readyz"
    drain_delay: float = 5.0
    clock: Clock = SYSTEM_CLOCK

    def __post_init__(self) -> None:
        for name in ("live", "ready"):
            path = getattr(self, name)
            if not path.startswith("/") or any(c in path for c in "?# "):
                raise ConfigError(
                    f"HealthOptions.{name}: {path!r} is not a path: expected one starting "
                    "with '/', without a query, such as '/healthz'"
                )
        if self.live == self.ready:
            raise ConfigError(
                f"HealthOptions.ready: {self.ready!r} is also the live path: "
                "expected two different paths"
            )
        check_range(self, "drain_delay", 0, MAX_SECONDS, "seconds from 0 to 1e8")


class Health(Plugin):
    """Answers the probes while wrapped around the site's app; drains before the servers stop.

    Contract: readiness is 503 before any stop listener runs, and the servers
    keep accepting for ``drain_delay`` seconds after that (unless restarting
    or rolling back).
    """

    def __init__(self, bus: Bus, options: HealthOptions | None = None) -> None:
        super().__init__(bus)
        self.options = options or HealthOptions()
        self._clock = self.options.clock
        self._changed = threading.Condition(threading.Lock())
        self._started = False  # the last start finished: a stop drains
        self._draining = False  # told to drain by a supervisor (a workers' master)

    def __repr__(self) -> str:
        return f"<Health live={self.options.live!r} ready={self.options.ready!r}>"

    # -- what the probes say ------------------------------------------------

    def ready(self) -> bool:
        """Whether the site wants new traffic: STARTED (so not stopping), and not draining."""
        return self.bus.state is State.STARTED and not self._draining

    def begin_drain(self) -> None:
        """Answer 503 on readiness from now on, until the next start; any thread.

        For a supervisor that drains on this bus's behalf: a workers' master
        tells each worker as it begins to stop, and waits the drain delay
        itself, while the workers go on serving.
        """
        self._draining = True

    def live(self, wait: float = LIVE_WAIT) -> bool:
        """Whether the process serves and its main thread is free within ``wait`` seconds.

        STOPPING counts as live: the site is draining or finishing requests.
        The wait may block the calling thread; ``asgi()`` calls it off the
        event loop when the bus is busy.
        """
        state = self.bus.state
        if state is State.STOPPING:
            return True
        if state is not State.STARTED:
            return False
        # A stop takes the lock just before it says STOPPING: look again after the wait.
        return self.bus.responsive(wait) or self.bus.state is State.STOPPING

    def _response(self, path: str, method: str, ok: bool) -> tuple[int, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed: expected GET or HEAD\n"
        probe = "ready" if path == self.options.ready else "live"
        if ok:
            return 200, f"{probe}\n".encode()
        return 503, f"not {probe}: the bus is {self.bus.state.value}\n".encode()

    # -- the site's app, wrapped --------------------------------------------

    def wsgi(self, app: WSGIApp) -> WSGIApp:
        """``app`` with the probe paths answered in front of it."""
        paths = {_latin1(self.options.live), _latin1(self.options.ready)}

        def probes(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            if path not in paths:
                return app(environ, start_response)
            path = path.encode("latin-1").decode()
            method = environ.get("REQUEST_METHOD", "GET")
            ok = self.ready() if path == self.options.ready else self.live()
            status, body = self._response(path, method, ok)
            start_response(_STATUS_LINES[status], _headers(body))
            return [b""] if method == "HEAD" else [body]

        return probes

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """``app`` with the probe paths answered in front of it; lifespan and the rest pass."""
        paths = {self.options.live, self.options.ready}

        async def probes(
            scope: MutableMapping[str, Any],
            receive: Callable[[], Awaitable[Message]],
            send: Callable[[Message], Awaitable[None]],
        ) -> None:
            root = scope.get("root_path", "")
            path = scope.get("path", "")
            route = path[len(root) :] if root and path.startswith(root) else path
            if scope["type"] != "http" or route not in paths:
                await app(scope, receive, send)
                return
            method = scope.get("method", "GET")
            if route == self.options.ready:
                ok = self.ready()
            else:  # the bus's lock is waited for in a thread, never in the event loop
                ok = self.live(wait=0) or await _in_thread(self.live)
            status, body = self._response(route, method, ok)
            headers = [(name.lower().encode(), value.encode()) for name, value in _headers(body)]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

        return probes

    # -- the bus ------------------------------------------------------------

    def state(self, state: State) -> None:
        """Note whether the start finished, so that only a stop after a finished start drains."""
        if state is State.STARTING:
            self._started = self._draining = False
        elif state is State.STARTED:
            self._started = True

    @priority(StartOrder.HEALTH)
    def stop(self) -> None:
        """Keep serving for ``drain_delay`` seconds, readiness answering 503, then return.

        Safe to call when start never ran: nothing to drain then.
        """
        delay = self.options.drain_delay
        started, self._started = self._started, False
        if not started or self.bus.restarting or delay == 0:
            return
        self.bus.log(
            f"Draining for {delay:g} s before the servers stop accepting: "
            f"{self.options.ready} answers 503"
        )
        deadline = self._clock.monotonic() + delay
        with self._changed:
            self._clock.wait_until(self._changed, lambda: False, deadline)
        self.bus.log("Drain delay over", logging.DEBUG)


async def _in_thread(fn: Callable[[], bool]) -> bool:
    import asyncio  # only an ASGI site needs it, and it is there already

    return await asyncio.to_thread(fn)


def _latin1(path: str) -> str:
    """The path as WSGI's ``PATH_INFO`` holds it: its UTF-8 bytes read as latin-1 (PEP 3333)."""
    return path.encode().decode("latin-1")


def _headers(body: bytes) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
