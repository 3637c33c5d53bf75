"""A database that opens before the web server and closes after it.

Run it with ``make demo`` (or ``python examples/persistence.py --port 8080``)
and open the printed address: every request is counted in a real sqlite3
database. Ctrl-C or SIGTERM stops the site: the server stops first (it
started last, at ``StartOrder.SERVERS``), then the database closes (it opened
first, at ``StartOrder.PIDFILE``, as on CherryPy's bus page), because teardown
runs in the reverse order of start.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from sitebus import Bus, Plugin, StartError, StartOrder, priority


class Database(Plugin):
    """A sqlite3 database shared by every request thread, open while the site runs."""

    def __init__(self, bus: Bus, path: Path) -> None:
        super().__init__(bus)
        self.path = path
        self._connection: sqlite3.Connection | None = None
        # One connection for all threads: sqlite3 allows that when told so
        # (check_same_thread=False) and every use is serialised by this lock.
        self._lock = threading.Lock()

    @priority(StartOrder.PIDFILE)
    def start(self) -> None:
        connection = sqlite3.connect(self.path, check_same_thread=False)
        connection.execute("CREATE TABLE IF NOT EXISTS visits (path TEXT NOT NULL)")
        connection.commit()
        self._connection = connection
        self.bus.log(f"Database open: {self.path}")

    @priority(StartOrder.PIDFILE)
    def stop(self) -> None:
        """Safe to call when start never ran: there is nothing to close then."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
                self.bus.log("Database closed")

    def record_visit(self, path: str) -> int:
        """Count a visit to ``path``; return how many that path has had."""
        with self._lock:
            if self._connection is None:
                raise RuntimeError("the database is closed")
            self._connection.execute("INSERT INTO visits (path) VALUES (?)", (path,))
            self._connection.commit()
            row = self._connection.execute(
                "SELECT COUNT(*) FROM visits WHERE path = ?", (path,)
            ).fetchone()
            return int(row[0])


class WebServer(Plugin):
    """The standard library's threaded HTTP server, answering from the database."""

    def __init__(self, bus: Bus, database: Database, host: str = "127.0.0.1", port: int = 0):
        super().__init__(bus)
        self.database = database
        self.address = (host, port)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    @priority(StartOrder.SERVERS)
    def start(self) -> None:
        database = self.database

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server dispatches to
                count = database.record_visit(self.path)
                body = f"{self.path} has been visited {count} time(s)\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # the stdlib's name
                pass

        self._server = http.server.ThreadingHTTPServer(self.address, Handler)
        self._server.daemon_threads = False  # stop waits for requests in flight
        self._thread = threading.Thread(target=self._server.serve_forever, name="web-server")
        self._thread.start()
        self.bus.log(f"Serving on {self.url}")

    @priority(StartOrder.SERVERS)
    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
        self._server = self._thread = None
        self.bus.log("Web server stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--database", type=Path, default=Path("visits.sqlite3"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bus = Bus()
    database = Database(bus, args.database)
    database.subscribe()
    WebServer(bus, database, port=args.port).subscribe()
    signal.signal(signal.SIGTERM, lambda signum, frame: bus.request_exit())
    try:
        bus.start()
    except StartError:  # already logged in one line, and rolled back
        return 1
    print("Press Ctrl-C to stop.")
    return bus.block()


if __name__ == "__main__":
    sys.exit(main())
