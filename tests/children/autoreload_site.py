"""A site with the autoreload plugin, run from inside the site tree it watches.

It imports ``app`` from the working directory and reports
``watching <generation> <app.VALUE> <backend>`` once the watcher is armed, then
``reload <path,...>`` for each reload and ``log <message>`` for the plugin's
log lines and the bus's word of a failed listener. Commands on the hold pipe:
``go`` answers ``pong <generation> <state>`` (the site is alive and serving),
``im`` imports the module ``late`` and reports ``imported <late.VALUE>
<watched>`` once it is watched.

Options: --glob PATTERN (watch it through the options), --register PATH
(published on ``autoreload.watch`` after start), --debounce SECONDS,
--backend NAME (polling every 0.05 s), --handed-since NS (the first
generation starts as if a re-exec had handed it that autoreload clock).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from report import report

from sitebus import Bus
from sitebus.plugins.autoreload import Autoreload, AutoreloadOptions


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--glob", action="append", default=[])
    parser.add_argument("--register", action="append", default=[])
    parser.add_argument("--debounce", type=float, default=0.05)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--handed-since")
    args = parser.parse_args()
    generation = int(os.environ.get("AUTORELOAD_GENERATION", "0"))
    os.environ["AUTORELOAD_GENERATION"] = str(generation + 1)  # inherited by the re-exec
    sys.path.insert(0, os.getcwd())
    import app

    bus = Bus(listener_timeout=30.0, logger=None)
    signal.signal(signal.SIGTERM, lambda signum, frame: bus.request_exit())
    bus.subscribe("reload", lambda paths: report("reload " + ",".join(sorted(paths))))
    bus.subscribe(
        "log",
        lambda message, level, exc: (
            message.startswith(("Autoreload", "Listener"))  # "Listener x failed on 'stop'"
            and not message.startswith("Autoreload: watching")  # "watching" is reported apart
            and report(f"log {message}")
        ),
    )
    options = AutoreloadOptions(
        paths=tuple(args.glob), debounce=args.debounce, backend=args.backend, poll_interval=0.05
    )
    if args.handed_since is not None and generation == 0:
        from sitebus import _handover

        _handover.put("autoreload", args.handed_since)
    plugin = Autoreload(bus, options)
    plugin.subscribe()
    bus.start()
    for path in args.register:
        bus.publish("autoreload.watch", path)
    if not plugin.wait_ready(30):
        report("not ready")
        return 1

    def serve_commands() -> None:
        fd = int(os.environ["SITEBUS_TEST_HOLD_FD"])
        while command := os.read(fd, 3):
            if command == b"go\n":
                report(f"pong {generation} {bus.state.value}")
            elif command == b"im\n":
                late = importlib.import_module("late")
                watched = plugin.wait_watching(late.__file__, 30)
                report(f"imported {late.VALUE} {watched}")

    threading.Thread(target=serve_commands, daemon=True).start()
    # block() must run before the first edit: the test waits for this line,
    # which is sent from inside block() by a graceful request.
    bus.subscribe("graceful", lambda: report(f"watching {generation} {app.VALUE} {plugin.backend}"))
    bus.request_graceful()
    return bus.block()


if __name__ == "__main__":
    sys.exit(main())
