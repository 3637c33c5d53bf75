"""A database plugin for hosted sites: opens at start, closes at stop, reports both with its PID.

``sqlite3.connect`` makes a connection only its own thread may use or close:
the stop must run in the thread that started the site.
"""

from __future__ import annotations

import os
import sqlite3

from report import report

from sitebus import Bus, Plugin, StartOrder, priority


class Database(Plugin):
    def __init__(self, bus: Bus, path: str) -> None:
        super().__init__(bus)
        self.path = path
        self.db: sqlite3.Connection | None = None

    @priority(StartOrder.PIDFILE)
    def start(self) -> None:
        self.db = sqlite3.connect(self.path)
        report(f"db open {os.getpid()}")

    @priority(StartOrder.PIDFILE)
    def stop(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
            report(f"db closed {os.getpid()}")
