"""What ``sitebus run`` and ``sitebus check`` do, short of printing errors (``cli.py`` does).

``run`` loads the site file, configures the log first, imports and
assembles the site, starts it, says how long each plugin took to start and
where the site listens, then blocks until it exits. ``check`` imports and
makes everything the same way, subscribes and starts nothing, and describes
what would run.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._startup import (
    Progress,
    command_log,
    failed_sources,
    log_app_failure,
    pause_collector,
    resume_collector,
    start_and_block,
)
from ..bus import Bus
from ..errors import AppError, ImportStringError
from ..servers._activation import under_systemd
from ..servers._failed_app import unavailable_app
from .assemble import Site, assemble, site_bus
from .config import SiteConfig, check_imports, load

if TYPE_CHECKING:
    from ..plugins.systemd import Systemd

__all__ = ["check", "configure", "level_of", "run", "start_report"]

# The plugin sections ``check`` names when the file has them, in this order.
_CHECKED_SECTIONS = (
    "signals",
    "daemon",
    "pidfile",
    "privileges",
    "autoreload",
    "tasks",
    "health",
    "log",
)


def configure(
    path: str,
    overrides: Iterable[str] = (),
    *,
    reload: bool | None = None,
    daemonize: bool = False,
    pidfile: str | None = None,
) -> SiteConfig:
    """The site file at ``path`` with the command line's flags laid over it.

    ``reload`` True turns autoreload on (watching the site file too), False
    off, None leaves the file's ``[autoreload]``; ``daemonize`` and
    ``pidfile`` stand for ``[daemon]`` and ``[pidfile] path``. Signals are
    always handled: a run without ``[signals]`` gets the defaults.
    """
    from ..plugins.autoreload import AutoreloadOptions
    from ..plugins.daemon import DaemonOptions
    from ..plugins.pidfile import PidfileOptions
    from ..plugins.signals import SignalsOptions

    config = load(path, overrides)
    changes: dict[str, object] = {}
    if config.signals is None:
        changes["signals"] = SignalsOptions()
    if reload is True:
        base = config.autoreload or AutoreloadOptions(config_file=config.path)
        changes["autoreload"] = base.replace(enabled=True)
    elif reload is False:
        changes["autoreload"] = None
    if daemonize and config.daemon is None:
        changes["daemon"] = DaemonOptions()
    if pidfile is not None:
        changes["pidfile"] = PidfileOptions(path=os.path.abspath(pidfile))
    return config.replace(**changes) if changes else config


def run(config: SiteConfig, *, log_level: str | None = None, overrides: Iterable[str] = ()) -> int:
    """Start the site ``config`` describes and block until it exits; return the exit status.

    The log is held back during the start: a start that fails shows only its
    error (raised, for the caller to print), not the rollback's log. With
    ``[site] workers`` above 1 this process becomes the master of that many
    workers (``sitebus.workers``), each of which loads the file again, with
    the same ``overrides``.
    """
    if config.site.worker_count() > 1:
        from ..workers.run import run_master

        return run_master(config, overrides, log_level=log_level)
    bus = site_bus(config)
    logs, held = command_log(bus, level_of(config, log_level), config.log)
    site: Site | None = None
    systemd: Systemd | None = None
    try:
        # Only the imports are watched: the timer's thread must be gone
        # before the start, where a daemon plugin forks.
        progress = Progress(functools.partial(_starting, config))
        thresholds = pause_collector()
        try:
            site = _assemble(config, bus)
        finally:
            resume_collector(thresholds)
            progress.cancel()
        # Again, now that the apps are imported: a framework may configure
        # logging as it is imported, and Django's dictConfig closes every
        # handler there is, the site's log file among them.
        logs.unsubscribe()
        logs.subscribe()
        site.subscribe()
        if under_systemd():  # here, not in tests' sites
            from ..plugins.systemd import Systemd

            systemd = Systemd(bus)
            systemd.subscribe()
        return start_and_block(
            bus, held, over=lambda: None, started=functools.partial(_say_started, site)
        )
    finally:
        if systemd is not None:
            systemd.unsubscribe()
        if site is not None:
            site.unsubscribe()
        logs.unsubscribe()


def _assemble(config: SiteConfig, bus: Bus) -> Site:
    """The site; with autoreload on, a site that stands in for it while its code is broken.

    In development an edit that breaks an app must not end the site: when an
    app's (or a middleware's, or a plugin's) module raises as it is
    imported, or an ASGI app's lifespan startup fails, the site answers 500
    with the error and watches the files that failed, and the next edit
    restarts it. A module that does not exist at all still ends the run.
    """
    reloading = config.autoreload is not None and config.autoreload.enabled
    if not reloading:
        return assemble(config, check_imports(config), bus)
    on_failure = functools.partial(log_app_failure, bus)
    try:
        imports = check_imports(config)
    except ImportStringError as exc:
        cause = _root_cause(exc)
        if cause is None or not failed_sources(cause):
            raise
        error = AppError(str(exc))
        error.__cause__ = cause
        watch = on_failure(error)
        assert config.autoreload is not None  # reloading
        config = config.replace(
            autoreload=config.autoreload.replace(paths=(*config.autoreload.paths, *watch))
        )
        return assemble(config, None, bus, stand_in=unavailable_app(error))
    return assemble(config, imports, bus, on_lifespan_failure=on_failure)


def _root_cause(exc: BaseException) -> BaseException | None:
    """The exception at the end of ``exc``'s chain of causes; None when it has none."""
    cause = exc.__cause__
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    return cause


def _starting(config: SiteConfig) -> str:
    binds = ", ".join(bind for server in config.servers for bind in server.binds)
    return f"Starting {_name(config)} on {binds} (importing its apps and plugins)"


def _name(config: SiteConfig) -> str:
    return config.site.name or os.path.basename(config.path)


def _say_started(site: Site) -> None:
    for line in start_report(site):
        site.bus.log(line)


def level_of(config: SiteConfig, log_level: str | None) -> int:
    if log_level is not None:
        return logging.getLevelNamesMapping()[log_level.upper()]
    if config.log is not None:
        level = config.log.level
        return level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]
    return logging.INFO


def start_report(site: Site) -> list[str]:
    """What a start prints once done: the plugins' start times, slowest first, and the URLs."""
    timings = sorted(site.bus.timings.get("start", ()), key=lambda t: t.seconds, reverse=True)
    total = sum(t.seconds for t in timings)
    # "sitebus.servers.sockets.Sockets.start" -> "Sockets": the plugin's class.
    each = ", ".join(f"{t.listener.rsplit('.', 2)[-2]} {t.seconds * 1000:.1f} ms" for t in timings)
    name = _name(site.config)
    return [
        f"Started {name} in {total * 1000:.0f} ms: {each}",
        f"Listening on {', '.join(site.urls())}",
    ]


def check(config: SiteConfig) -> list[str]:
    """Import everything ``config`` names and describe what would run; start nothing.

    The plugins and servers are made, on a bus of their own, but not
    subscribed: an engine that is not installed, or that cannot honour a
    server's options (TLS, its files), fails the check as it would the run.
    Raises what ``check_imports`` and ``assemble`` raise.
    """
    site = assemble(config, check_imports(config), site_bus(config))
    lines = [f"{config.path}: ok"]
    for index, (section, server) in enumerate(zip(config.servers, site.servers, strict=True)):
        lines.append(f"server[{index}]: {server.engine} on {', '.join(section.binds)}")
    for app in config.apps:
        lines.append(f"app {app.mount}: {app.key} {app.target}")
    autoreload = config.autoreload is not None and config.autoreload.enabled
    plugins = [
        name
        for name in _CHECKED_SECTIONS
        if getattr(config, name) is not None and (name != "autoreload" or autoreload)
    ]
    plugins += [section.use for section in config.plugins]
    lines.append(f"plugins: {', '.join(plugins) or 'none'}")
    if config.site.worker_count() > 1:
        lines.append(f"workers: {config.site.worker_count()}, under a master")
    return lines
