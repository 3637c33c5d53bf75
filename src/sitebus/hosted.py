"""The site as one WSGI or ASGI callable, for a host process: mod_wsgi, gunicorn, uvicorn.

``wsgi_app(path)`` and ``asgi_app(path)`` read and import the site file at
once (a bad file fails where the host loads it), and assemble its site the
way ``sitebus run`` does, with ``assemble(..., hosted=True)``: the host owns
the process, so no servers, and no signal handlers, daemon, PID file,
privileges or autoreload, whatever the file says (one log line says so when
it asks for them). The site's bus, with its ``[[plugin]]``s, starts in the
host's process on first use: the first request, or the ASGI lifespan
startup when the host sends one. It starts once per process: a host that
forks its workers from a master that loaded the module (gunicorn) gets one
site per worker, made in the worker. It stops at the lifespan shutdown, or
at interpreter exit (``atexit``) in the process that started it.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .errors import ConfigError
from .site.assemble import Site, assemble, site_bus
from .site.config import SiteConfig, check_imports, load

__all__ = ["asgi_app", "wsgi_app"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The sections of a site file that the host, owning the process, decides instead.
HOST_OWNED = ("signals", "daemon", "pidfile", "privileges", "autoreload")


class HostedSite:
    """One site file, assembled and started once in each process that uses it.

    ``app()`` returns the started site's one app in the host's protocol
    (``protocol``: ``"wsgi"`` or ``"asgi"``), starting the site the first time
    in each process (thread-safe); ``site()`` returns the started ``Site``;
    ``stop()`` exits its bus. A process forked
    from one whose site had started gets a site of its own: the parent's
    resources (its database connection, its threads) are not the child's to
    use or close.
    """

    def __init__(self, path: str | os.PathLike[str], protocol: str) -> None:
        self.config: SiteConfig = load(path)
        self.imports = check_imports(self.config)
        self.protocol = protocol
        self._lock = threading.Lock()
        self._site: Site | None = None
        self._app: Any = None
        self._pid: int | None = None
        self._atexit_registered = False

    @property
    def kind(self) -> str:
        """The site's own protocol: ``"asgi"`` when the file mounts an ASGI app, else ``"wsgi"``."""
        return "asgi" if any(app.kind == "asgi" for app in self.config.apps) else "wsgi"

    def app(self) -> Any:
        """This process's started site's app; the first call in each process starts the site."""
        app = self._app
        if app is not None and self._pid == os.getpid():
            return app
        with self._lock:
            if self._app is None or self._pid != os.getpid():
                self._site = self._start()
                self._app = self._served(self._site)
                self._pid = os.getpid()
            return self._app

    def site(self) -> Site:
        """This process's started site (its ``bus``, ``plugins``, ...); starts it if need be."""
        self.app()
        site = self._site
        assert site is not None, "started by app()"
        return site

    def _served(self, site: Site) -> Any:
        if site.kind == self.protocol:
            return site.app
        # A WSGI site in an ASGI host, adapted as the uvicorn engine adapts it.
        from .servers.base import as_asgi

        threads = max(server.threads for server in self.config.servers)
        return as_asgi(site.app, threads=threads)

    def _start(self) -> Site:
        bus = site_bus(self.config)
        site = assemble(self.config, self.imports, bus, hosted=True)
        asked = [name for name in HOST_OWNED if _asks_for(self.config, name)]
        if asked:
            bus.log(
                f"{self.config.path}: {', '.join(f'[{name}]' for name in asked)} stay off: "
                "the host process owns signals, daemon, PID file, privileges and reloading"
            )
        site.subscribe()
        try:
            bus.start()
        except BaseException:
            site.unsubscribe()
            raise
        if not self._atexit_registered:
            # Registered once, by the first process to start: a forked child
            # inherits the registration, and stop() acts on the child's own site.
            atexit.register(self.stop)
            self._atexit_registered = True
        return site

    def stop(self) -> None:
        """Exit this process's site, if it started one; the next use starts a new one."""
        with self._lock:
            site, pid = self._site, self._pid
            if site is None or pid != os.getpid():
                return
            self._site = self._app = self._pid = None
        try:
            site.bus.exit()
        finally:
            site.unsubscribe()


def _asks_for(config: SiteConfig, name: str) -> bool:
    value = getattr(config, name)
    if name == "autoreload":
        return value is not None and bool(value.enabled)
    return value is not None


class HostedWSGI:
    """The WSGI callable of ``wsgi_app``; ``hosted`` is its ``HostedSite``."""

    def __init__(self, hosted: HostedSite) -> None:
        self.hosted = hosted

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        app: Callable[..., Iterable[bytes]] = self.hosted.app()
        return app(environ, start_response)


class HostedASGI:
    """The ASGI callable of ``asgi_app``; ``hosted`` is its ``HostedSite``.

    A lifespan startup starts the site, then the mounted ASGI apps' own
    lifespans; a lifespan shutdown ends them, then exits the site's bus, in
    the event loop's thread where it started.
    """

    def __init__(self, hosted: HostedSite) -> None:
        self.hosted = hosted

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        app: Callable[[Message, Receive, Send], Awaitable[None]] = self.hosted.app()
        await app(scope, receive, send)

    async def _lifespan(self, scope: Message, receive: Receive, send: Send) -> None:
        startup = await receive()
        try:
            app = self.hosted.app()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        if self.hosted.kind != "asgi":  # WSGI apps have no lifespan of their own
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            self.hosted.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
        pending = [startup]

        async def app_receive() -> Message:
            return pending.pop() if pending else await receive()

        async def app_send(message: Message) -> None:
            if message["type"] in (
                "lifespan.startup.failed",
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
            ):
                self.hosted.stop()
            await send(message)

        await app(scope, app_receive, app_send)


def wsgi_app(path: str | os.PathLike[str]) -> HostedWSGI:
    """One WSGI callable serving every ``[[app]]`` of the site file at ``path``.

    For mod_wsgi (``application = wsgi_app("/srv/site/site.toml")``) or
    gunicorn. Raises ``ConfigError`` for a file that mounts an ASGI app (use
    ``asgi_app`` with an ASGI host), and what ``load`` and ``check_imports``
    raise.
    """
    hosted = HostedSite(path, "wsgi")
    if hosted.kind == "asgi":
        mount = next(app.mount for app in hosted.config.apps if app.kind == "asgi")
        raise ConfigError(
            f"{hosted.config.path}: the app mounted at {mount!r} is an ASGI app, which a WSGI "
            "host cannot serve: expected only wsgi apps for wsgi_app, or use asgi_app with "
            "an ASGI host such as uvicorn"
        )
    return HostedWSGI(hosted)


def asgi_app(path: str | os.PathLike[str]) -> HostedASGI:
    """One ASGI callable serving every ``[[app]]`` of the site file at ``path``.

    For uvicorn or hypercorn. WSGI apps are adapted as ``sitebus run`` adapts
    them (a2wsgi, the ``site`` extra). Raises what ``load`` and
    ``check_imports`` raise.
    """
    return HostedASGI(HostedSite(path, "asgi"))
