"""cheroot (CherryPy's HTTP server) as an engine: the default for WSGI apps.

cheroot binds its own socket in ``prepare()`` and, in ``stop()``, connects to
that socket to wake its accept loop and then closes it. Neither suits sockets
the bus owns: a self-connect would be held off by the SYN filter of a graceful
stop (a one-second stall) or, during a restart, be handed to the next image
as an empty connection. So this adapter replaces those two steps: it serves a
given socket, and wakes the loop through the bus's ``Wakeup`` pipe registered
beside it.

That takes cheroot internals, which its public API does not offer; the
``cheroot`` extra pins the major versions this adapter is tested with (``>=10,
<12``), so an upgrade fails in CI rather than in production:

- ``ConnectionManager._selector``: where the wake-up pipe is registered, so
  the accept loop's own wait sees it;
- ``HTTPServer._unservicable_conns`` and ``server._STOPPING_FOR_INTERRUPT``,
  ``ConnectionManager._stop_requested``: what cheroot's own ``stop()`` sets
  to leave the accept loop, without its self-connect;
- ``HTTPServer.prepare()``'s body (``_interrupt``, ``_connections``,
  ``_start_time``), rewritten here to take a given socket instead of binding.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from cheroot import connections, server, wsgi

from .._wakeup import Wakeup
from .base import Server

__all__ = ["CherootServer"]

# How long past the deadline a stop waits for cheroot to shut the reading side
# of requests still running: a few system calls.
_FORCE_CLOSE_GRACE = 0.1


class _Wake:
    """What the wake-up pipe hands to cheroot's workers: a connection with nothing to do."""

    last_used = float("inf")  # never expired by cheroot's keep-alive sweep

    def communicate(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _Cheroot(wsgi.Server):
    """cheroot's WSGI server on a socket it is given rather than one it binds."""

    def __init__(
        self, sock: socket.socket, app: Any, threads: int, log: Callable[[str, int, bool], None]
    ) -> None:
        if sock.family == socket.AF_UNIX:
            bind_addr: Any = sock.getsockname()
        else:
            bind_addr = sock.getsockname()[:2]
        super().__init__(bind_addr, app, numthreads=threads)
        self._given = sock
        self._log = log
        self._wakeup = Wakeup()

    def prepare(self) -> None:
        self._interrupt = None
        if self.software is None:
            self.software = f"{self.version} Server"
        self.socket = self._given
        # cheroot accepts with a timeout, as its own prepare() sets it up.
        self.socket.settimeout(1)
        self._connections = connections.ConnectionManager(self)
        selector = self._connections._selector  # type: ignore[attr-defined]  # private: see the module docstring
        selector.register(self._wakeup.fileno(), selectors.EVENT_READ, _Wake())
        _in_daemon_thread(self.requests.start)
        self.ready = True
        self._start_time = time.time()

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """cheroot's error hook, into the bus's log rather than straight to stderr."""
        self._log(f"cheroot: {msg}", level, traceback)

    def stop_accepting(self, timeout: float) -> None:
        """Leave the accept loop at once; the socket, its queue and in-flight requests stay."""
        self.ready = False
        # cheroot's own stop() does these two, then the self-connect we avoid.
        self._unservicable_conns.put(server._STOPPING_FOR_INTERRUPT)  # type: ignore[attr-defined]  # private: see the module docstring
        self._connections._stop_requested = True  # type: ignore[attr-defined]  # private: see the module docstring
        self._wakeup.ping()

    def finish(self, deadline: float) -> bool:
        """Close idle keep-alive connections, let the workers finish, release the socket.

        False if requests were still running at ``deadline`` (monotonic):
        cheroot's ``ThreadPool.stop`` then shuts their reading side and waits
        for them without a bound, so it runs in a helper thread that is only
        waited for until the deadline. The workers are daemons (see
        ``prepare``), so those requests do not keep the process alive either.
        """
        self._connections.stop()
        self._connections.close()
        stopper = threading.Thread(
            target=self.requests.stop,
            args=(max(0.0, deadline - time.monotonic()),),
            name="sitebus-cheroot-stop",
            daemon=True,
        )
        stopper.start()
        stopper.join(max(0.0, deadline - time.monotonic()) + _FORCE_CLOSE_GRACE)
        self.socket.close()
        self.socket = None
        self._wakeup.close()
        return not stopper.is_alive()


def _in_daemon_thread(start: Callable[[], None]) -> None:
    """Call ``start`` in a daemon thread and wait: the threads it starts are daemons too.

    A thread takes its daemon flag from the thread that creates it, and the
    interpreter waits at exit for every thread that is not a daemon: a
    request still running when the graceful timeout ends would otherwise keep
    the stopped site's process alive until it returns.
    """
    failed: list[BaseException] = []

    def run() -> None:
        try:
            start()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="sitebus-cheroot-pool", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


class CherootServer(Server):
    """Serves a WSGI app with cheroot's thread pool; supports TLS."""

    engine = "cheroot"
    tls_supported = True

    def serve(self, socks: list[socket.socket]) -> None:
        self._servers: list[_Cheroot] = []
        self._threads: list[threading.Thread] = []
        app = self.request_app()
        try:
            for sock in socks:
                httpd = _Cheroot(sock, app, self.options.threads, self._error_log)
                if self.options.certfile:
                    from cheroot.ssl.builtin import BuiltinSSLAdapter  # only for TLS

                    adapter = BuiltinSSLAdapter(self.options.certfile, self.options.keyfile)
                    httpd.ssl_adapter = adapter
                httpd.prepare()
                thread = threading.Thread(target=httpd.serve, name="sitebus-cheroot", daemon=True)
                thread.start()
                self._servers.append(httpd)
                self._threads.append(thread)
        except BaseException:
            self.shutdown(time.monotonic())  # the ones already serving; the bus rolls back
            raise

    def _error_log(self, message: str, level: int, traceback: bool) -> None:
        self.bus.log(message, level, exc_info=traceback)

    def shutdown(self, deadline: float) -> None:
        for httpd in self._servers:
            httpd.stop_accepting(deadline - time.monotonic())
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = [httpd.finish(deadline) for httpd in self._servers]
        if not all(finished):
            self.bus.log(
                "cheroot: requests still running at the graceful timeout were abandoned",
                logging.WARNING,
            )
