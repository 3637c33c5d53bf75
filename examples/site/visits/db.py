"""The site's database: a sqlite3 file open while the site runs, as on CherryPy's bus page.

The site file puts the plugin on the bus, and sitebus calls ``Persistence(bus, path=...)``::

    [[plugin]]
    use = "visits.db:Persistence"
    path = "visits.sqlite3"

It opens at ``StartOrder.PIDFILE`` (20), before the sockets are bound and long
before the servers answer (``StartOrder.SERVERS``), and closes on stop after
the servers have stopped, because teardown runs in the reverse order of start.
The apps reach the running database through ``database()``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from sitebus import Bus, Plugin, StartOrder, priority

__all__ = ["Persistence", "database"]

# The started plugin. sitebus makes the plugin from the site file and the apps
# are imported from it too, so neither is handed the other: the apps find the
# database here, as they would find a framework's global `db` object.
_running: Persistence | None = None


def database() -> Persistence:
    """The started ``Persistence`` plugin; ``RuntimeError`` when none is."""
    if _running is None:
        raise RuntimeError(
            "the site's database is not open: start a bus with the Persistence plugin "
            '([[plugin]] use = "visits.db:Persistence" in the site file)'
        )
    return _running


class Persistence(Plugin):
    """Counts page visits in the sqlite3 file at ``path`` (relative to the current directory)."""

    def __init__(self, bus: Bus, path: str | os.PathLike[str] = "visits.sqlite3") -> None:
        super().__init__(bus)
        # Resolved now, before a daemon would change directory to "/".
        self.path = Path(path).absolute()
        self._connection: sqlite3.Connection | None = None
        # One connection for every thread, each use under this lock. Requests
        # arrive on threads this plugin does not own and is not told the end
        # of (the engine's pool, a2wsgi's pool for WSGI apps on uvicorn,
        # Starlette's pool for its sync endpoints): per-thread connections
        # could not be closed at stop and would outlive the site. sqlite3
        # allows sharing a connection across threads when told so
        # (check_same_thread=False) and the uses are serialised; sqlite lets
        # only one writer in at a time anyway, and a visit is one short
        # transaction, so the lock costs nothing a visitor could notice.
        self._lock = threading.Lock()

    @priority(StartOrder.PIDFILE)
    def start(self) -> None:
        global _running
        connection = sqlite3.connect(self.path, check_same_thread=False)
        with connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS visits "
                "(page TEXT PRIMARY KEY, count INTEGER NOT NULL DEFAULT 0)"
            )
        with self._lock:
            self._connection = connection
        _running = self
        self.bus.log(f"Database open: {self.path}")

    @priority(StartOrder.PIDFILE)
    def stop(self) -> None:
        """Safe to call when start never ran: there is nothing to close then."""
        global _running
        if _running is self:
            _running = None
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            self.bus.log("Database closed")

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def record_visit(self, page: str) -> int:
        """Count one visit to ``page``; return how many it has had, this one included."""
        with self._lock:
            connection = self._open()
            with connection:  # one transaction: committed, or rolled back on error
                connection.execute(
                    "INSERT INTO visits (page, count) VALUES (?, 1) "
                    "ON CONFLICT (page) DO UPDATE SET count = count + 1",
                    (page,),
                )
                row = connection.execute(
                    "SELECT count FROM visits WHERE page = ?", (page,)
                ).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        """Every page's visits so far."""
        with self._lock:
            rows = self._open().execute("SELECT page, count FROM visits ORDER BY page")
            return {str(page): int(count) for page, count in rows}

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError(f"the database {self.path} is closed: the site is not running")
        return self._connection
