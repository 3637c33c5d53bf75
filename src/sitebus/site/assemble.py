"""The site assembler: a ``SiteConfig`` (and what it imports) made into plugins on one bus.

``assemble(config, imports, bus)`` builds, and subscribes nothing yet:

- one ``Sockets`` and one engine ``Server`` per ``[[server]]``, every server
  serving the site's one app (``site_app``: the dispatcher of every
  ``[[app]]``);
- the plugin sections, each made into the plugin whose options it holds:
  ``[pidfile]``, ``[daemon]``, ``[privileges]``, ``[autoreload]`` (when
  ``enabled``), ``[tasks]`` and ``[signals]``;
- ``[health]``: the ``Health`` plugin, whose probes are wrapped around the
  site's app, outside the site middleware, so that no app or middleware
  sees (or shadows, or guards with a login) the probe paths;
- every ``[[plugin]]``, constructed as ``Class(bus, **options)``;
- for a site that mounts a CherryPy app, the plugin that puts
  ``cherrypy.engine`` on the bus (``sitebus.compat.app.CherryPyEngine``).

``Site.subscribe()`` puts them all on the bus; their priorities
(``StartOrder``) decide the start order, not the order here. ``[log]`` is
not among them: the command that runs the site configures its log before
anything else happens (see ``site.run``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ..plugin import Plugin
from ..servers.base import Server, ServerOptions, load_engine
from ..servers.sockets import Sockets, SocketsOptions
from .mount import site_app

if TYPE_CHECKING:
    from ..bus import Bus
    from ..errors import AppError
    from ..plugins.health import Health
    from ..plugins.tasks import Tasks
    from ._check import SiteImports
    from .config import ServerSection, SiteConfig

__all__ = [
    "Site",
    "assemble",
    "engine_for",
    "process_plugins",
    "site_bus",
    "sockets_options",
]

# What a stop needs beyond the graceful timeouts: lifespan shutdowns, the
# other listeners, the engines' clean-up.
STOP_MARGIN = 30.0


def engine_for(server: ServerSection, kind: str) -> str:
    """The engine of ``server``: the one it names, else uvicorn for an ASGI site, else cheroot."""
    if server.engine is not None:
        return server.engine
    return "uvicorn" if kind == "asgi" else "cheroot"


def site_bus(config: SiteConfig, bus_class: type[Bus] | None = None) -> Bus:
    """A bus (a ``bus_class``, by default a ``Bus``) whose bounds leave every server of
    ``config`` its graceful timeout.

    Servers stop one after the other, each waiting up to ``graceful_timeout``
    for its requests in flight: a whole exit may take that long per server,
    after the health plugin's drain delay, if the file has ``[health]``.
    """
    from ..bus import Bus

    graceful = config.site.graceful_timeout
    drain = config.health.drain_delay if config.health is not None else 0.0
    return (bus_class or Bus)(
        listener_timeout=max(graceful, drain) + STOP_MARGIN,
        exit_timeout=drain + graceful * len(config.servers) + 2 * STOP_MARGIN,
    )


class Site:
    """Everything a site file asks for, made and ready to subscribe to ``bus``.

    ``plugins`` holds every plugin in the order made; ``sockets[i]`` and
    ``servers[i]`` belong to ``config.servers[i]``. ``tasks`` is the ``Tasks``
    plugin when the file has a ``[tasks]`` section: code adds its periodic
    callables there (``site.tasks.add(...)``). ``health`` is the ``Health``
    plugin when the file has ``[health]`` and the site serves itself.
    """

    def __init__(
        self,
        bus: Bus,
        config: SiteConfig,
        kind: str,
        app: Any,
        sockets: tuple[Sockets, ...],
        servers: tuple[Server, ...],
        plugins: tuple[Plugin, ...],
        tasks: Tasks | None,
        health: Health | None = None,
    ) -> None:
        self.bus = bus
        self.config = config
        self.kind = kind
        self.app = app
        self.sockets = sockets
        self.servers = servers
        self.plugins = plugins
        self.tasks = tasks
        self.health = health

    def subscribe(self) -> None:
        for plugin in self.plugins:
            plugin.subscribe()

    def unsubscribe(self) -> None:
        for plugin in reversed(self.plugins):
            plugin.unsubscribe()

    def urls(self) -> list[str]:
        """Every address the site listens on, once started: ``http://127.0.0.1:8080``, ..."""
        found = []
        for sockets, server in zip(self.sockets, self.servers, strict=True):
            scheme = "https" if server.tls else "http"
            found += [listener.url.replace("http", scheme, 1) for listener in sockets.listeners]
        return found


def assemble(
    config: SiteConfig,
    imports: SiteImports | None,
    bus: Bus,
    *,
    stand_in: Any = None,
    on_lifespan_failure: Callable[[AppError], object] | None = None,
    hosted: bool = False,
    make_sockets: Callable[[Bus, SocketsOptions], Sockets] = Sockets,
) -> Site:
    """Make every plugin ``config`` asks for on ``bus``; subscribe none of them.

    For development, ``stand_in`` is a WSGI app served in place of the site's
    apps (which did not import, so ``imports`` is None and the ``[[plugin]]``
    tables are left out); with ``on_lifespan_failure``, a failed ASGI
    lifespan startup is handed to it and the site answers 500 instead of
    failing its start. ``hosted``: another process serves the apps and owns
    the process (``sitebus.hosted``), so no servers, sockets or process-wide
    plugins (signals, daemon, PID file, privileges, autoreload) are made,
    whatever ``config`` says, and no health probes either: the host answers
    for the process, and a drain delay would only hold up its exit.
    ``make_sockets`` makes each server's ``Sockets`` plugin: a worker's adopt
    the master's sockets (``sitebus.workers``). Raises ``ConfigError`` for an
    engine that cannot honour a server's options and ``MissingExtraError``
    for an engine that is not installed.
    """
    if stand_in is not None:
        kind, app = "wsgi", stand_in
    else:
        assert imports is not None, "the site's imports, or a stand-in app"
        kind, app = site_app(config, imports)
        if kind == "asgi" and on_lifespan_failure is not None:
            from ..servers._failed_app import FailedStartupServes500

            app = FailedStartupServes500(app, on_lifespan_failure)
    plugins: list[Plugin] = [] if hosted else process_plugins(config, bus)
    tasks = None
    if config.tasks is not None:
        from ..plugins.tasks import Tasks

        tasks = Tasks(bus, config.tasks)
        plugins.append(tasks)
    health = None
    if config.health is not None and not hosted:
        from ..plugins.health import Health

        health = Health(bus, config.health)
        app = health.asgi(app) if kind == "asgi" else health.wsgi(app)
        plugins.append(health)
    all_sockets, servers = [], []
    for index, section in enumerate(() if hosted else config.servers):
        sockets = make_sockets(bus, sockets_options(section))
        engine = load_engine(engine_for(section, kind))
        options = ServerOptions(
            graceful_timeout=config.site.graceful_timeout,
            threads=section.threads,
            certfile=section.certfile,
            keyfile=section.keyfile,
        )
        # The first server's engine runs the apps' ASGI lifespan; a second
        # would start (and stop) them once more.
        served = app if index == 0 or kind != "asgi" else _WithoutLifespan(app)
        server = engine(bus, served, sockets, options)
        all_sockets.append(sockets)
        servers.append(server)
        plugins += [sockets, server]
    if imports is not None and any(section.key == "cherrypy" for section in config.apps):
        from ..compat.app import CherryPyEngine  # imports CherryPy: only for a site that has it

        plugins.append(CherryPyEngine(bus))
    declared = () if imports is None else zip(config.plugins, imports.plugins, strict=True)
    for table, cls in declared:
        # check_imports bound these keywords to the constructor already.
        plugins.append(cls(bus, **table.options))
    return Site(
        bus, config, kind, app, tuple(all_sockets), tuple(servers), tuple(plugins), tasks, health
    )


def sockets_options(section: ServerSection) -> SocketsOptions:
    """What the ``Sockets`` plugin of a ``[[server]]`` binds."""
    return SocketsOptions(
        binds=section.binds,
        backlog=section.backlog,
        unix_mode=section.unix_mode,
        name=section.name or "",
    )


def process_plugins(config: SiteConfig, bus: Bus) -> list[Plugin]:
    """The process-wide services the file's sections ask for, imported only when asked."""
    plugins: list[Plugin] = []
    if config.signals is not None:
        from ..plugins.signals import Signals

        plugins.append(Signals(bus, config.signals))
    if config.daemon is not None:
        from ..plugins.daemon import Daemon

        plugins.append(Daemon(bus, config.daemon))
    if config.pidfile is not None:
        from ..plugins.pidfile import Pidfile

        plugins.append(Pidfile(bus, config.pidfile))
    if config.privileges is not None:
        from ..plugins.privileges import Privileges

        plugins.append(Privileges(bus, config.privileges))
    if config.autoreload is not None and config.autoreload.enabled:
        from ..plugins.autoreload import Autoreload

        plugins.append(Autoreload(bus, config.autoreload))
    return plugins


Message = MutableMapping[str, Any]


class _WithoutLifespan:
    """An ASGI app that answers the lifespan protocol itself and passes everything else on."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
