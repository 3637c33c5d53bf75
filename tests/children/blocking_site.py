"""A site driven by block(): its listeners report every step to the test.

Options: --hold-start (the start listener waits for the test's release),
--slow-stop (a stop listener reports, then never returns),
--hold-stop (a stop listener reports, then waits for the test's release), --fail-start (a
start listener raises), --report-blocking (report once
block() runs), --restart-once (the first generation calls restart()
from another thread once block() runs).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from report import hold, report

from sitebus import Bus, StartError


def main() -> int:
    options = set(sys.argv[1:])
    generation = int(os.environ.get("CHILD_GENERATION", "0"))
    os.environ["CHILD_GENERATION"] = str(generation + 1)  # inherited by a re-exec
    bus = Bus(listener_timeout=60.0)
    signal.signal(signal.SIGTERM, lambda signum, frame: bus.request_exit())
    signal.signal(signal.SIGHUP, lambda signum, frame: bus.request_restart())
    signal.signal(signal.SIGUSR1, lambda signum, frame: bus.request_graceful())

    @bus.subscribe("start")
    def started() -> None:
        if "--hold-start" in options and generation == 0:
            report("holding")
            hold()
        if "--fail-start" in options:
            raise OSError("[Errno 98] address already in use: 127.0.0.1:8080")

    bus.subscribe("graceful", lambda: report("graceful"))
    bus.subscribe("stop", lambda: report("stop"))
    bus.subscribe("exit", lambda: report("exit"))
    if "--hold-stop" in options and generation == 0:

        def held() -> None:
            report("stopping")
            hold()

        bus.subscribe("stop", held)
    if "--slow-stop" in options:

        def wedged() -> None:
            report("stopping")
            threading.Event().wait()

        bus.subscribe("stop", wedged)

    try:
        bus.start()
    except StartError:
        return 1
    report(f"started {generation} {os.getpid()} {' '.join(sys.orig_argv[1:])}")
    if "--report-blocking" in options:
        # Ctrl-C is a KeyboardInterrupt wherever the main thread is: the test
        # waits for this report, which graceful() sends from inside block().
        bus.subscribe("graceful", lambda: report("blocking"))
        bus.request_graceful()
    if "--restart-once" in options and generation == 0:
        # restart() from another thread, once block() runs (graceful runs there).
        bus.subscribe("graceful", lambda: threading.Thread(target=bus.restart).start())
        bus.request_graceful()
    status = bus.block()
    report(f"exited {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
