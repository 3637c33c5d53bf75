"""CherryPy's classic ``Persistence`` plugin, put on a site by a ``[[plugin]]`` table.

The database opens at start priority 20 with a plain ``sqlite3.connect``,
whose connection refuses any thread but the one that made it, and closes at
stop: both run in the main thread under ``block()``. It reports both.
"""

from __future__ import annotations

import sqlite3

from report import report

from sitebus import Bus, Plugin, priority


class Persistence(Plugin):
    def __init__(self, bus: Bus, path: str) -> None:
        super().__init__(bus)
        self.path = path
        self.db: sqlite3.Connection | None = None

    @priority(20)
    def start(self) -> None:
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS starts (n INTEGER)")
        self.db.execute("INSERT INTO starts VALUES (1)")
        self.db.commit()
        report(f"db open {self.path}")

    @priority(20)
    def stop(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
            report("db closed")
