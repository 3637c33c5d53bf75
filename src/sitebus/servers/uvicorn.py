"""uvicorn as an engine for ASGI apps, on the bus's sockets, in its own thread and loop.

uvicorn's ``Server.serve(sockets=...)`` already serves given sockets; run in a
thread other than the main one it installs no signal handlers, which is what
a site needs: the bus owns signals. The ASGI lifespan follows the bus: the
start listener returns only once ``lifespan.startup`` completed (and fails the
bus start if it failed), and the stop listener returns once
``lifespan.shutdown`` did.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import uvicorn

from ..bus import ERROR, WARNING
from ..errors import SitebusError
from .base import Server, is_asgi

__all__ = ["UvicornServer"]

_FRESH = 1.0  # seconds a silent new connection is given to send its request during a stop


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling the bus when start-up is over, whichever way it went."""

    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._startup_over = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets)
        finally:
            self._startup_over.set()

    async def stop_accepting(self, grace: float) -> None:
        """Close the listeners, then give just-accepted connections time to send a request.

        uvicorn's shutdown closes every connection that has no request under
        way; one accepted a moment ago whose request is still unread would be
        reset. Within ``grace`` seconds, wait until each has started one.
        """
        # Asyncio accepts a batch of connections at once and wraps each one in
        # a task that runs later; closing the server before those ran drops
        # (resets) them. So first stop watching the listeners, let the tasks
        # run, and only then close.
        loop = asyncio.get_running_loop()
        for server in self.servers:
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
        await asyncio.sleep(0.02)
        for server in self.servers:
            server.close()
        end = time.monotonic() + grace
        while time.monotonic() < end and any(
            getattr(connection, "cycle", True) is None
            for connection in self.server_state.connections
        ):
            await asyncio.sleep(0.005)


class UvicornServer(Server):
    """Serves an ASGI app with uvicorn; supports TLS."""

    engine = "uvicorn"
    tls_supported = True
    serves_asgi = True

    def serve(self, socks: list[socket.socket]) -> None:
        config = uvicorn.Config(
            self.app,
            # A bound method or a wrapped callable defeats uvicorn's own guess.
            interface="asgi3" if is_asgi(self.app) else "auto",
            lifespan="auto",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(self.options.graceful_timeout),
            ssl_certfile=self.options.certfile,
            ssl_keyfile=self.options.keyfile,
        )
        over = threading.Event()
        self._server = _Uvicorn(config, over)
        self._thread = threading.Thread(
            target=self._run, args=(socks,), name="sitebus-uvicorn", daemon=True
        )
        self._thread.start()
        over.wait(self.bus.listener_timeout)
        if not self._server.started:
            self._server.should_exit = True
            self._thread.join(self.bus.listener_timeout)
            raise SitebusError("uvicorn did not start: the ASGI lifespan startup failed")

    def _run(self, socks: list[socket.socket]) -> None:
        try:
            self._server.run(sockets=socks)
        except SystemExit:  # uvicorn's way of saying that lifespan startup failed
            pass
        except Exception:
            self.bus.log("uvicorn stopped on an error", ERROR, exc_info=True)
        finally:
            for sock in socks:
                sock.close()

    def shutdown(self, deadline: float) -> None:
        if self._thread.is_alive():
            quiet = asyncio.run_coroutine_threadsafe(
                self._server.stop_accepting(_FRESH), self._server.loop
            )
            with contextlib.suppress(Exception):
                quiet.result(_FRESH + 5.0)
        left = max(0.0, deadline - time.monotonic())
        self._server.config.timeout_graceful_shutdown = max(1, int(left))
        self._server.should_exit = True
        # uvicorn's own bound, plus its lifespan shutdown.
        self._thread.join(left + 5.0)
        if self._thread.is_alive():
            self.bus.log("uvicorn still running after the graceful timeout", WARNING)
