"""A site driven by block() with the logs, tasks and threads plugins.

Usage: runtime_site.py LOGFILE. The log goes to LOGFILE as JSON lines; a
periodic task fails and the test hears once that is logged; a request thread holds a thread index
until the site stops. SIGTERM exits, SIGUSR1 is graceful (which reopens the
log file); each step is reported to the test.
"""

from __future__ import annotations

import signal
import sys
import threading

from report import report

from sitebus import Bus
from sitebus.plugins.logs import Logs, LogsOptions
from sitebus.plugins.tasks import Tasks, TasksOptions
from sitebus.plugins.threads import Threads


def main() -> int:
    bus = Bus(listener_timeout=30.0, thread_join_timeout=30.0)
    signal.signal(signal.SIGTERM, lambda signum, frame: bus.request_exit())
    signal.signal(signal.SIGUSR1, lambda signum, frame: bus.request_graceful())
    Logs(bus, LogsOptions(file=sys.argv[1], format="json")).subscribe()
    threads = Threads(bus)
    threads.subscribe()
    tasks = Tasks(bus, TasksOptions(join_timeout=30.0))
    tasks.subscribe()

    def tick() -> None:
        raise RuntimeError("the run fails on purpose")

    def logged(message: str, level: int, exc: BaseException | None) -> None:
        # The log channel is published after the line went to the file.
        if message.startswith("Task 'tick' failed"):
            report("task failure logged")

    bus.subscribe("log", logged)

    # An hour's interval: the first run at once, then the stop must not wait it out.
    tasks.add(3600, tick, name="tick", delay=0)
    bus.subscribe("graceful", lambda: report("graceful"))
    bus.subscribe("stop_thread", lambda index: report(f"stop_thread {index}"))

    request_done = threading.Event()

    def request() -> None:
        bus.publish("acquire_thread")
        report(f"request holds {threads.current_index()}")
        request_done.wait()

    bus.start()
    worker = threading.Thread(target=request, name="request", daemon=True)
    worker.start()
    report("started")
    status = bus.block()
    request_done.set()
    worker.join()
    report(f"exited {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
