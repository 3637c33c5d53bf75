"""waitress as an engine: its asyncore loop on the bus's sockets, with a graceful stop.

waitress has no graceful stop of its own: closing its map drops requests in
flight. So this adapter drives the loop itself. A stop, carried out in the
loop thread through waitress's trigger pipe, takes the listeners out of the
loop (their queue stays intact), then keeps the loop running until every
channel has answered what it received; idle keep-alive channels are closed.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from waitress import create_server, wasyncore  # type: ignore[import-untyped]  # waitress ships no types
from waitress.channel import HTTPChannel  # type: ignore[import-untyped]  # waitress ships no types
from waitress.server import BaseWSGIServer  # type: ignore[import-untyped]  # waitress ships no types
from waitress.task import ThreadedTaskDispatcher  # type: ignore[import-untyped]  # waitress ships no types

from .base import Server

__all__ = ["WaitressServer"]

_POLL = 1.0  # seconds; the trigger pipe wakes the loop at once on a stop
_FRESH = 0.1  # seconds a silent new channel is given to send its request during a stop


class WaitressServer(Server):
    """Serves a WSGI app with waitress's task threads."""

    engine = "waitress"

    def serve(self, socks: list[socket.socket]) -> None:
        self._map: dict[int, Any] = {}
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(self.options.threads)
        app = self.request_app()
        # One waitress server per socket, on one map and one thread pool:
        # create_server refuses to mix TCP and Unix sockets in one call.
        for sock in socks:
            create_server(app, map=self._map, sockets=[sock], _dispatcher=dispatcher)
        self._listeners = [d for d in self._map.values() if isinstance(d, BaseWSGIServer)]
        self._use_poll = self._listeners[0].adj.asyncore_use_poll  # as waitress's own run()
        self._stopping = False
        self._deadline = float("inf")
        # A daemon, as every engine thread: a forced exit (Ctrl-C twice) must end the process.
        self._thread = threading.Thread(target=self._loop, name="sitebus-waitress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            if self._stopping and (not self._busy() or time.monotonic() >= self._deadline):
                break
            timeout = _FRESH if self._stopping else _POLL
            wasyncore.loop(timeout=timeout, map=self._map, use_poll=self._use_poll, count=1)

    def _busy(self) -> bool:
        """True while a channel has a request in flight; closes the idle ones."""
        busy = False
        for channel in list(self._map.values()):
            if not isinstance(channel, HTTPChannel):
                continue
            if channel.requests or channel.request is not None or channel.total_outbufs_len:
                busy = True
            elif time.time() - channel.last_activity < _FRESH:
                busy = True  # just accepted: its request may not have been read yet
            elif not channel.will_close:
                channel.will_close = True
                busy = True  # one more turn of the loop closes it
        return busy

    def _stop_accepting(self) -> None:
        for listener in self._listeners:
            listener.accepting = False
            listener.del_channel()

    def shutdown(self, deadline: float) -> None:
        self._deadline = deadline
        self._stopping = True
        # Runs in the loop thread, so the map is never changed under the loop.
        self._listeners[0].trigger.pull_trigger(self._stop_accepting)
        self._thread.join(max(0.0, deadline - time.monotonic()) + _POLL)
        if self._busy():
            self.bus.log(
                "waitress: requests still running at the graceful timeout", logging.WARNING
            )
        dispatcher = self._listeners[0].task_dispatcher
        dispatcher.shutdown(cancel_pending=True, timeout=max(0.0, deadline - time.monotonic()))
        wasyncore.close_all(self._map)
        for listener in self._listeners:
            listener.socket.close()
