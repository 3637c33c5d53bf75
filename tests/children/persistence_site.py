"""CherryPy's classic ``Persistence`` plugin, literally, on a served sitebus site.

The database opens in a start listener at priority 20 with a plain
``sqlite3.connect(path)``, whose connection refuses any thread but the one
that made it, and closes in a stop listener. Under ``block()`` both run in
the main thread, so the close works. Options: ``--exit-timeout SECONDS`` and
``--wedge-exit`` (an exit listener that never returns) for the watchdog test.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from report import report

from sitebus import Bus, Plugin, priority
from sitebus.plugins.signals import Signals
from sitebus.servers import Sockets, SocketsOptions
from sitebus.servers.base import ServerOptions, load_engine


class Persistence(Plugin):
    def __init__(self, bus: Bus, path: str) -> None:
        self.bus = bus  # the CherryPy way: no super().__init__()
        self.path = path
        self.db: sqlite3.Connection | None = None

    @priority(20)
    def start(self) -> None:
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS starts (n INTEGER)")
        self.db.execute("INSERT INTO starts VALUES (1)")
        self.db.commit()
        report("db open")

    @priority(20)
    def stop(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
            report("db closed")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def main() -> int:
    args = sys.argv[1:]
    exit_timeout = (
        float(args[args.index("--exit-timeout") + 1]) if "--exit-timeout" in args else 120
    )
    bus = Bus(listener_timeout=30.0, exit_timeout=exit_timeout)
    Persistence(bus, args[0]).subscribe()
    sockets = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",)))
    sockets.subscribe()
    if "--wedge-exit" in args:
        # No server: its graceful timeout could not fit in a one-second exit bound.

        def wedged() -> None:
            report("wedged")
            threading.Event().wait()

        bus.subscribe("exit", wedged)
    else:
        load_engine("wsgiref")(bus, app, sockets, ServerOptions(graceful_timeout=5.0)).subscribe()
    signals = Signals(bus)
    signals.subscribe()
    bus.start()
    report(f"serving {sockets.listeners[0].url}")
    status = bus.block()
    report(f"exited {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
