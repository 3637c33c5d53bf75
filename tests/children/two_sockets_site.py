"""Two apps on two ports: two Sockets plugins and two servers on one bus, driven by block().

Reports ``serving GEN PID PORT1 PORT2`` once started, and ``exited N``; the
first app answers ``hello <pid>``, the second ``second <pid>``. A re-exec runs
it again, so every generation reports.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import hello_app
from report import report

from sitebus import Bus, StartError
from sitebus.plugins.signals import Signals
from sitebus.servers import Sockets, SocketsOptions
from sitebus.servers.wsgiref import WsgirefServer


def second(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"second {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def main() -> int:
    generation = int(os.environ.get("CHILD_GENERATION", "0"))
    os.environ["CHILD_GENERATION"] = str(generation + 1)  # inherited by a re-exec
    bus = Bus(listener_timeout=60.0)
    Signals(bus).subscribe()
    ports = []
    for app in (hello_app.app, second):
        sockets = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0",)))
        sockets.subscribe()
        WsgirefServer(bus, app, sockets).subscribe()
        ports.append(sockets)
    try:
        bus.start()
    except StartError as exc:
        report(f"start-failed {exc}")
        return 1
    found = [str(s.listeners[0].socket.getsockname()[1]) for s in ports]
    report(f"serving {generation} {os.getpid()} {' '.join(found)}")
    status = bus.block()
    report(f"exited {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
