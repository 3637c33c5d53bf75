"""uvicorn as an engine for ASGI apps (and WSGI apps through a2wsgi), in its own thread and loop.

uvicorn's ``Server.serve(sockets=...)`` already serves given sockets; run in a
thread other than the main one it installs no signal handlers, which is what
a site needs: the bus owns signals. The ASGI lifespan follows the bus: the
start listener returns only once ``lifespan.startup`` completed (and fails the
bus start if it failed, with the app's exception as the cause), and the stop
listener returns once ``lifespan.shutdown`` did. A WSGI app is served through
``as_asgi``: a2wsgi's adapter, on a pool of ``threads`` threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from ..errors import AppError, describe
from .base import Server, as_asgi

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


class _LifespanWatch:
    """The ASGI app, noting why its lifespan startup failed, if it does.

    uvicorn logs the failure and ends; the bus start must say why instead:
    the exception the app raised, or the message it sent with
    ``lifespan.startup.failed``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.exception: BaseException | None = None
        self.message = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def noting_send(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                self.message = str(message.get("message") or "")
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except BaseException as exc:
            self.exception = exc
            raise


class UvicornServer(Server):
    """Serves an ASGI app, or a WSGI app through a2wsgi, with uvicorn; supports TLS."""

    engine = "uvicorn"
    tls_supported = True
    serves_asgi = True

    def serve(self, socks: list[socket.socket]) -> None:
        self._app = _LifespanWatch(as_asgi(self.request_app(), threads=self.options.threads))
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
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
            failed = "uvicorn did not start: the ASGI lifespan startup failed"
            cause = self._app.exception
            if cause is not None:
                raise AppError(f"{failed}: {describe(cause)}") from cause
            why = self._app.message.strip().splitlines()
            raise AppError(f"{failed}: {why[-1]}" if why else failed)

    def _run(self, socks: list[socket.socket]) -> None:
        try:
            self._server.run(sockets=socks)
        except SystemExit:  # uvicorn's way of saying that lifespan startup failed
            pass
        except Exception:
            self.bus.log("uvicorn stopped on an error", logging.ERROR, exc_info=True)
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
            self.bus.log("uvicorn still running after the graceful timeout", logging.WARNING)
