"""Several apps in one site, each at its own path prefix: the WSGI and ASGI dispatchers.

Dispatch is by the longest prefix, in whole path segments: ``/flask`` takes
``/flask`` and ``/flask/...``, never ``/flaskish``; a path no prefix takes
gets a plain 404. Each app sees the prefix as its root, the way its framework
expects, so the URLs it builds and the redirects it sends carry the prefix:

- a WSGI app gets the prefix appended to ``SCRIPT_NAME`` and the rest of the
  path in ``PATH_INFO`` (PEP 3333);
- an ASGI app gets the prefix appended to ``root_path`` and the full path in
  ``path``, as the ASGI spec says and as Starlette (which routes on ``path``
  minus ``root_path``) and uvicorn do.

The site's graph is site middleware → dispatcher → app middleware → app; a
middleware is a factory ``factory(app) -> app``, and the first of a list is
the outermost (``wrap``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MissingExtraError, describe

if TYPE_CHECKING:
    import asyncio

    from ._check import SiteImports
    from .config import SiteConfig

__all__ = ["ASGIApp", "ASGIDispatcher", "WSGIApp", "WSGIDispatcher", "site_app", "wrap"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NOT_FOUND = b"Not Found\n"
_NOT_FOUND_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "10")]


def wrap(app: Any, factories: Sequence[Callable[[Any], Any]]) -> Any:
    """``app`` inside each middleware factory, the first of ``factories`` outermost."""
    for factory in reversed(factories):
        app = factory(app)
    return app


def _prefix(mount: str) -> str:
    """``"/"`` → ``""``, ``"/blog/"`` → ``"/blog"``: the form matching compares."""
    if not mount.startswith("/"):
        raise ConfigError(f"mount {mount!r} is not a path prefix: expected '/' or '/blog'")
    return mount.rstrip("/")


def _longest_first(pairs: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    seen: set[str] = set()
    mounts = []
    for mount, app in pairs:
        prefix = _prefix(mount)
        if prefix in seen:
            raise ConfigError(f"mount {mount!r} is given twice: expected one app per prefix")
        seen.add(prefix)
        mounts.append((prefix, app))
    return sorted(mounts, key=lambda pair: len(pair[0]), reverse=True)


def _match(path: str, mounts: list[tuple[str, Any]]) -> tuple[str, Any] | None:
    """The mount of the longest prefix that is ``path`` or a whole-segment start of it."""
    for prefix, app in mounts:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix, app
    return None


class WSGIDispatcher:
    """A WSGI app that hands each request to the app mounted at the longest matching prefix.

    ``mounts`` maps prefixes (``"/"``, ``"/blog"``) to WSGI apps. The prefix
    moves from ``PATH_INFO`` to the end of ``SCRIPT_NAME``, so a dispatcher
    mounted under another prefix composes.
    """

    def __init__(self, mounts: Mapping[str, WSGIApp]) -> None:
        # PATH_INFO holds the path's UTF-8 bytes as latin-1 (PEP 3333): the
        # prefixes are compared in that form.
        self._mounts = [
            (prefix.encode().decode("latin-1"), app)
            for prefix, app in _longest_first(mounts.items())
        ]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        found = _match(path, self._mounts)
        if found is None:
            start_response("404 Not Found", list(_NOT_FOUND_HEADERS))
            return [_NOT_FOUND]
        prefix, app = found
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
        environ["PATH_INFO"] = path[len(prefix) :]
        result: Iterable[bytes] = app(environ, start_response)
        return result


class ASGIDispatcher:
    """An ASGI app that hands each connection to the app at the longest matching prefix.

    ``mounts`` maps prefixes to ASGI apps; ``wsgi`` maps prefixes to WSGI
    apps, which run through ``a2wsgi.WSGIMiddleware``, each on a pool of
    ``threads`` threads, so a slow WSGI request never blocks the event loop.
    The lifespan protocol reaches every mounted ASGI app: the startup goes to
    each in turn and is answered once all completed; a failed startup shuts
    down those already started and fails naming the app's prefix; the
    shutdown goes to each in reverse order. ``close()`` (called at the
    lifespan shutdown) ends the WSGI apps' thread pools.
    """

    def __init__(
        self,
        mounts: Mapping[str, ASGIApp],
        *,
        wsgi: Mapping[str, WSGIApp] | None = None,
        threads: int = 10,
    ) -> None:
        self._asgi = dict(mounts)
        self._wsgi = dict(wsgi or {})
        self._threads = threads
        self._lifespan_apps = [(_prefix(mount), app) for mount, app in mounts.items()]
        self._adapters: list[Any] = []
        self._mounts: list[tuple[str, Any]] = []
        self._closed = False
        self._open()

    def _open(self) -> None:
        """Mount the apps, the WSGI ones each through an adapter with a new thread pool."""
        adapters = {}
        if self._wsgi:
            try:
                from a2wsgi import WSGIMiddleware  # only a site mixing WSGI into ASGI needs it
            except ModuleNotFoundError as exc:
                raise MissingExtraError(
                    "mounting a WSGI app in an ASGI site needs a2wsgi: pip install 'sitebus[site]'"
                ) from exc
            adapters = {
                # a2wsgi types the environ as a TypedDict; PEP 3333 gives a plain dict.
                mount: WSGIMiddleware(app, workers=self._threads)  # type: ignore[arg-type]
                for mount, app in self._wsgi.items()
            }
        self._adapters = list(adapters.values())
        self._mounts = _longest_first([*self._asgi.items(), *adapters.items()])
        self._closed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        root = scope.get("root_path", "")
        path = scope["path"]
        # Where the path starts with root_path (the ASGI spec, uvicorn >= 0.26),
        # match what follows it; an older server gives the path without it.
        route = path[len(root) :] if root and path.startswith(root) else path
        found = _match(route, self._mounts)
        if found is None:
            await _not_found(scope, send)
            return
        prefix, app = found
        child = dict(scope)
        child["root_path"] = root + prefix
        child["path"] = root + route
        await app(child, receive, send)

    def close(self) -> None:
        """End the WSGI apps' thread pools, waiting for requests still running there.

        Idle pool threads would otherwise hold up the end of the process. The
        next lifespan startup (a site started again in the same process) gives
        the WSGI apps new pools.
        """
        for adapter in self._adapters:
            adapter.executor.shutdown(wait=True)
        self._closed = True

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        if self._closed:
            self._open()
        started: list[_AppLifespan] = []
        for prefix, app in self._lifespan_apps:
            lifespan = _AppLifespan(prefix, app, scope)
            failure = await lifespan.startup()
            if failure is not None:
                await _shutdown(started)
                self.close()
                await send(
                    {
                        "type": "lifespan.startup.failed",
                        "message": f"the app mounted at {prefix or '/'!r} failed to start: "
                        f"{failure}",
                    }
                )
                return
            if lifespan.supported:
                started.append(lifespan)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        failures = await _shutdown(started)
        self.close()
        if failures:
            await send({"type": "lifespan.shutdown.failed", "message": "; ".join(failures)})
        else:
            await send({"type": "lifespan.shutdown.complete"})


async def _shutdown(started: list[_AppLifespan]) -> list[str]:
    """Shut the started apps down, last started first; their failures, one line each."""
    failures = []
    for lifespan in reversed(started):
        failure = await lifespan.shutdown()
        if failure is not None:
            failures.append(f"the app mounted at {lifespan.prefix!r} failed to stop: {failure}")
    return failures


class _AppLifespan:
    """One mounted app's lifespan, run as a task fed by its own queues."""

    def __init__(self, prefix: str, app: ASGIApp, scope: Scope) -> None:
        # asyncio is imported here, not with the module: a site of WSGI apps
        # alone never needs it, and it is a quarter of this package's import time.
        import asyncio

        self.prefix = prefix or "/"
        self.supported = True
        self._error: Exception | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._run(app, dict(scope)))

    async def _run(self, app: ASGIApp, scope: Scope) -> None:
        try:
            await app(scope, self._inbox.get, self._outbox.put)
        except Exception as exc:
            self._error = exc
        finally:
            self._outbox.put_nowait(None)  # the app returned: nothing more will come

    async def startup(self) -> str | None:
        """None when started (or when the app has no lifespan), else why it failed."""
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._outbox.get()
        if reply is None:
            # Raising or returning at once means no lifespan support: the ASGI
            # spec says to go on without lifespan events for this app.
            self.supported = False
            return None
        if reply["type"] == "lifespan.startup.complete":
            return None
        self._task.cancel()  # a failed app may still wait for messages: none will come
        await _finished(self._task)
        return self._failure(reply)

    async def shutdown(self) -> str | None:
        """None when shut down cleanly, else why not."""
        await self._inbox.put({"type": "lifespan.shutdown"})
        reply = await self._outbox.get()
        await _finished(self._task)
        if reply is None:
            return describe(self._error) if self._error else "returned during shutdown"
        if reply["type"] == "lifespan.shutdown.complete":
            return None
        return self._failure(reply)

    def _failure(self, reply: Message) -> str:
        """One line for a failed reply: the exception the app raised, else its message's end.

        Starlette sends a whole traceback as the message and then raises.
        """
        if self._error is not None:
            return describe(self._error)
        lines = str(reply.get("message") or "").strip().splitlines()
        return lines[-1] if lines else str(reply["type"])


async def _finished(task: asyncio.Task[None]) -> None:
    """Wait until ``task`` is done, without raising what it raised or its cancellation."""
    import asyncio

    await asyncio.wait([task])


async def _not_found(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1000})
        return
    headers = [(name.lower().encode(), value.encode()) for name, value in _NOT_FOUND_HEADERS]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": _NOT_FOUND})


def site_app(config: SiteConfig, imported: SiteImports) -> tuple[str, Any]:
    """The site's one app, ``("wsgi", app)`` or ``("asgi", app)``, built from the file.

    Each app gets its own middleware, the dispatcher mounts them all (WSGI when
    every app is WSGI, else ASGI with the WSGI apps adapted, each on a pool of
    as many threads as the servers' largest ``threads``), and the site
    middleware wraps the dispatcher.
    """
    wsgi: dict[str, Any] = {}
    asgi: dict[str, Any] = {}
    for section, app, middleware in zip(
        config.apps, imported.apps, imported.app_middleware, strict=True
    ):
        (wsgi if section.kind == "wsgi" else asgi)[section.mount] = wrap(app, middleware)
    kind = "asgi" if asgi else "wsgi"
    # In an ASGI site the WSGI apps' pools are their request threads.
    threads = max(server.threads for server in config.servers)
    dispatcher: Any = (
        ASGIDispatcher(asgi, wsgi=wsgi, threads=threads) if asgi else WSGIDispatcher(wsgi)
    )
    return kind, wrap(dispatcher, imported.site_middleware)
