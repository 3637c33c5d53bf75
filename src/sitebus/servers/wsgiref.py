"""The standard library's wsgiref as an engine: zero dependencies, one thread a request.

wsgiref brings the HTTP parsing and the WSGI gateway; the accept loop is ours,
because ``socketserver.serve_forever`` wakes up to notice a shutdown only
every ``poll_interval`` and joins its request threads without a bound. This
loop sleeps in a selector on the listeners and the bus's ``Wakeup`` pipe, so a
stop is noticed at once, and the stop waits for request threads up to the
graceful deadline. It serves one thread per connection: ``threads`` does not
apply (``sitebus serve --engine wsgiref --threads N`` is refused).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .._wakeup import Wakeup
from .base import Server

__all__ = ["WsgirefServer"]

# How long a stop waits for the accept loop to see its wake-up: it does
# nothing slow, so this bound is only ever reached if something is badly wrong.
_LOOP_EXIT = 5.0


class _Handler(WSGIRequestHandler):
    """wsgiref's handler, without its line per request on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Gateway(WSGIServer):
    """The parts of WSGIServer a request handler uses, on a socket it does not own."""

    # No super().__init__(): it would create and bind a socket of its own.
    def __init__(self, sock: socket.socket, app: Any) -> None:
        self.socket = sock
        self.RequestHandlerClass = _Handler
        if sock.family == socket.AF_UNIX:
            self.server_address = ("localhost", 0)
        else:
            self.server_address = sock.getsockname()[:2]
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])
        self.setup_environ()
        self.set_app(app)


class WsgirefServer(Server):
    """Serves a WSGI app with the standard library; a thread per connection."""

    engine = "wsgiref"
    pools_threads = False

    def serve(self, socks: list[socket.socket]) -> None:
        app = self.request_app()
        self._gateways = {sock.fileno(): _Gateway(sock, app) for sock in socks}
        self._selector = selectors.DefaultSelector()
        self._wakeup = Wakeup()
        self._selector.register(self._wakeup, selectors.EVENT_READ)
        for sock in socks:
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._socks = socks
        self._stopping = False
        self._requests: set[threading.Thread] = set()
        self._requests_lock = threading.Lock()
        self._loop = threading.Thread(target=self._accept_loop, name="sitebus-wsgiref", daemon=True)
        self._loop.start()

    def _accept_loop(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                if key.fileobj is self._wakeup:
                    return
                sock: socket.socket = key.fileobj  # type: ignore[assignment]  # we registered sockets
                try:
                    conn, peer = sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError as exc:
                    self.bus.log(f"wsgiref: accept failed: {exc}", logging.ERROR)
                    continue
                if sock.family == socket.AF_UNIX:
                    peer = ("", 0)
                thread = threading.Thread(
                    target=self._handle,
                    args=(self._gateways[key.fd], conn, peer),
                    name="sitebus-wsgiref-request",
                    daemon=True,
                )
                with self._requests_lock:
                    self._requests.add(thread)
                thread.start()

    def _handle(self, gateway: _Gateway, conn: socket.socket, peer: Any) -> None:
        try:
            conn.setblocking(True)
            gateway.RequestHandlerClass(conn, peer, gateway)
        except Exception:
            self.bus.log("wsgiref: request failed", logging.ERROR, exc_info=True)
        finally:
            # Half-close first, so that the client reads the whole answer
            # before the close, rather than a reset.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            conn.close()
            with self._requests_lock:
                self._requests.discard(threading.current_thread())
            # This thread ends with its connection: announce its end as well.
            try:
                self.bus.publish("release_thread")
            except Exception:
                self.bus.log("wsgiref: releasing a request thread failed", logging.ERROR, True)

    def shutdown(self, deadline: float) -> None:
        self._stopping = True
        self._wakeup.ping()
        # Not bounded by the graceful deadline, which the drain may have used
        # up already: the loop would still be in its selector, and closing the
        # selector and pipe under it could leave it waiting for ever on a
        # descriptor closed (or reused) beneath it.
        self._loop.join(_LOOP_EXIT)
        if self._loop.is_alive():
            self.bus.log("wsgiref: the accept loop did not stop; left behind", logging.ERROR)
        else:
            self._selector.close()
            self._wakeup.close()
        for sock in self._socks:
            sock.close()
        with self._requests_lock:
            requests = list(self._requests)
        for thread in requests:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = sum(thread.is_alive() for thread in requests)
        if left:
            self.bus.log(
                f"wsgiref: {left} request(s) still running at the graceful timeout",
                logging.WARNING,
            )
