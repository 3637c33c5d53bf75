"""``sitebus serve --workers N``: the master's bus for one app served by N workers.

The master imports nothing of the app: a worker decides the engine (cheroot
for a WSGI app, uvicorn for an ASGI one, unless ``--engine`` says) and
reports any error in the app itself; the first start fails if a worker
does, with the worker's own error line above the master's.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

from .. import control
from .._startup import command_log, start_and_block
from ..cli import serve_bus, serve_sockets
from ..plugins.signals import Signals
from ..servers._activation import under_systemd
from .master import MasterBus, Workers, WorkersOptions

if TYPE_CHECKING:
    from ..plugins.health import HealthOptions

__all__ = ["serve_workers", "status_file"]


def status_file(pidfile: str | None) -> str | None:
    """Where a master with ``pidfile`` lists its workers for ``sitebus status``."""
    return None if pidfile is None else f"{pidfile}.workers"


def serve_workers(args: argparse.Namespace, health: HealthOptions | None = None) -> int:
    """Run ``sitebus serve``'s master until it exits; return the exit status.

    With ``health``, the workers answer the probes and the master drains.
    """
    bus = serve_bus(args, health, MasterBus)
    assert isinstance(bus, MasterBus)
    level = logging.getLevelNamesMapping()[args.log_level.upper()]
    logs, held = command_log(bus, level)
    try:
        sockets = serve_sockets(bus, args)
        site = {
            "kind": "serve",
            "app": args.app,
            "engine": args.engine,
            "binds": list(sockets.options.binds),
            "threads": args.threads,
            "graceful_timeout": args.graceful_timeout,
            "certfile": args.certfile and os.path.abspath(args.certfile),
            "keyfile": args.keyfile and os.path.abspath(args.keyfile),
            "log_level": args.log_level,
            "health": None if health is None else {"live": health.live, "ready": health.ready},
        }
        options = WorkersOptions(
            workers=args.workers,
            worker_timeout=args.worker_timeout,
            max_requests=args.max_requests,
            max_requests_jitter=args.max_requests_jitter,
            graceful_timeout=args.graceful_timeout,
            status_file=status_file(args.pidfile and os.path.abspath(args.pidfile)),
        )
        autoreload = None
        if args.reload:
            from ..plugins.autoreload import Autoreload

            autoreload = Autoreload(bus)
        workers = Workers(bus, [sockets], site, options, autoreload=autoreload)
        sockets.subscribe()
        workers.subscribe()
        if health is not None:
            from ..plugins.health import Health

            Health(bus, health).subscribe()  # its stop drains, the workers' probes say 503
        if autoreload is not None:
            autoreload.subscribe()
        control.subscribe_process_plugins(bus, daemonize=args.daemonize, pidfile=args.pidfile)
        if under_systemd():
            from ..plugins.systemd import Systemd

            Systemd(bus).subscribe()
        signals = Signals(bus)  # SIGHUP: a restart, which a MasterBus rolls
        signals.subscribe()
        try:
            return start_and_block(bus, held, over=lambda: None, started=lambda: None)
        finally:
            signals.unsubscribe()
            workers.unsubscribe()
    finally:
        logs.unsubscribe()
