"""``sitebus run`` with ``[site] workers`` above 1: the master's bus and each worker's.

The master makes the file's process-wide plugins (signals, daemon, PID
file, privileges) and one ``Sockets`` per ``[[server]]``, and imports none
of the apps. Each worker loads the same file (with the same ``--set``
overrides) and assembles the rest: the servers on the master's sockets,
the apps, ``[tasks]`` and every ``[[plugin]]``, so a database plugin opens
one connection per worker, and a periodic task runs in every worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from .._startup import command_log, pause_collector, resume_collector, start_and_block
from ..bus import Bus
from ..plugins.autoreload import Autoreload
from ..plugins.health import Health
from ..servers._activation import under_systemd
from ..servers.sockets import Sockets, SocketsOptions
from ..site.assemble import assemble, process_plugins, site_bus, sockets_options
from ..site.config import SiteConfig, check_imports
from ..site.run import level_of
from .master import MasterBus, Workers, WorkersOptions
from .serve import status_file
from .worker import WORKER_SIGNALS, MasterLink

__all__ = ["run_master", "run_worker"]


def run_master(config: SiteConfig, overrides: Iterable[str], *, log_level: str | None) -> int:
    """Run the master of ``config``'s workers until it exits; return the exit status."""
    bus = site_bus(config, MasterBus)
    assert isinstance(bus, MasterBus)
    logs, held = command_log(bus, level_of(config, log_level), config.log)
    plugins = process_plugins(config, bus)  # SIGHUP: a restart, which a MasterBus rolls
    if config.health is not None:
        # Its stop waits the drain delay while the workers serve, their probes
        # answering 503; the master serves no probe itself.
        plugins.append(Health(bus, config.health))
    sockets = [Sockets(bus, sockets_options(section)) for section in config.servers]
    site = {
        "kind": "run",
        "site_file": config.path,
        "overrides": list(overrides),
        "log_level": log_level,
        "graceful_timeout": config.site.graceful_timeout,
    }
    options = WorkersOptions(
        workers=config.site.worker_count(),
        worker_timeout=config.site.worker_timeout,
        max_requests=config.site.max_requests,
        max_requests_jitter=config.site.max_requests_jitter,
        graceful_timeout=config.site.graceful_timeout,
        status_file=status_file(os.fspath(config.pidfile.path) if config.pidfile else None),
    )
    # The file's [autoreload], if on, watches in the master what the workers report.
    autoreload = next((p for p in plugins if isinstance(p, Autoreload)), None)
    workers = Workers(bus, sockets, site, options, autoreload=autoreload)
    subscribed = [*plugins, *sockets, workers]
    try:
        for plugin in subscribed:
            plugin.subscribe()
        if under_systemd():
            from ..plugins.systemd import Systemd

            systemd = Systemd(bus)
            systemd.subscribe()
            subscribed.append(systemd)
        return start_and_block(bus, held, over=lambda: None, started=lambda: None)
    finally:
        for plugin in reversed(subscribed):
            plugin.unsubscribe()
        logs.unsubscribe()


def run_worker(
    config: SiteConfig,
    bus: Bus,
    make_sockets: Callable[[Bus, SocketsOptions], Sockets],
    link: MasterLink,
    *,
    log_level: str | None,
    started: Callable[[], None] = lambda: None,
) -> int:
    """Serve ``config``'s apps on the master's sockets until stopped; return the exit status."""
    config = config.replace(
        signals=WORKER_SIGNALS, daemon=None, pidfile=None, privileges=None, autoreload=None
    )
    if config.health is not None:
        # The master drains; here the probes only answer, 503 once told to drain.
        config = config.replace(health=config.health.replace(drain_delay=0.0))
    logs, held = command_log(bus, level_of(config, log_level), config.log)
    try:
        thresholds = pause_collector()
        try:
            site = assemble(config, check_imports(config), bus, make_sockets=make_sockets)
        finally:
            resume_collector(thresholds)
        # Again, now that the apps are imported (see site.run: Django's dictConfig).
        logs.unsubscribe()
        logs.subscribe()
        probes = site.health
        uncounted = () if probes is None else (probes.options.live, probes.options.ready)
        for server in site.servers:
            server.app = link.counted(server.app, uncounted)
        if probes is not None:
            link.on_drain = probes.begin_drain
        site.subscribe()
        link.subscribe()
        try:
            return start_and_block(bus, held, over=lambda: None, started=started)
        finally:
            link.unsubscribe()
            site.unsubscribe()
    finally:
        logs.unsubscribe()
