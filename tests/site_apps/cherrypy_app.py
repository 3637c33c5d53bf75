"""A CherryPy app for the compat tests: pages, URLs it builds, sessions, an engine plugin.

``EngineEvents`` is subscribed to ``cherrypy.engine`` as the module is
imported, the way CherryPy apps subscribe their plugins; it keeps what the
engine publishes, and reports it to the test when the process is a test's
child (``SITEBUS_TEST_REPORT_FD``).
"""

from __future__ import annotations

import os
import threading

import cherrypy
from cherrypy.process import plugins


class EngineEvents(plugins.SimplePlugin):
    """Records every transition and thread event the engine publishes to it."""

    def __init__(self, bus: object) -> None:
        super().__init__(bus)
        self.seen: list[str] = []
        self.thread_starts: list[tuple[int, int]] = []  # (thread ident, index)
        self.fail_start = False

    def _saw(self, event: str) -> None:
        self.seen.append(event)
        if "SITEBUS_TEST_REPORT_FD" in os.environ:
            from report import report

            report(f"engine {event}")

    def start(self) -> None:
        if self.fail_start:
            raise RuntimeError("the database is gone")
        self._saw("start")

    def stop(self) -> None:
        self._saw("stop")

    def graceful(self) -> None:
        self._saw("graceful")

    def exit(self) -> None:
        self._saw("exit")

    def start_thread(self, index: int) -> None:
        self.thread_starts.append((threading.get_ident(), index))


events = EngineEvents(cherrypy.engine)
events.subscribe()


class Root:
    @cherrypy.expose
    def index(self) -> str:
        return f"cherrypy home; page is at {cherrypy.url('/page')}"

    @cherrypy.expose
    def page(self) -> str:
        request = cherrypy.request
        return f"cherrypy page; script_name={request.script_name} path_info={request.path_info}"

    @cherrypy.expose
    def go(self) -> None:
        raise cherrypy.HTTPRedirect(cherrypy.url("/page"))

    @cherrypy.expose
    def visits(self) -> str:
        """Counts in the session: needs tools.sessions.on in the app's config."""
        count = cherrypy.session.get("count", 0) + 1
        cherrypy.session["count"] = count
        return str(count)

    @cherrypy.expose
    def threads(self) -> str:
        """Each request thread's start_thread, as ``ident:index`` pairs, and the thread names."""
        starts = ",".join(f"{ident}:{index}" for ident, index in events.thread_starts)
        names = ",".join(sorted(t.name for t in threading.enumerate()))
        return f"{starts}|{threading.get_ident()}|{names}|{cherrypy.server.httpserver!r}"


root = Root()
