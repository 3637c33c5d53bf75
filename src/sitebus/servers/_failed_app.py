"""What ``sitebus serve --reload`` serves while the app is broken: a 500 that says why.

In development an edit that breaks the app must not end the server: the
sockets stay bound, every request is answered ``500 Internal Server Error``
with the error, and the next edit restarts the process with the fixed code.
Two ways the app breaks: its import fails (``unavailable_app`` stands in for
it), or its ASGI lifespan startup fails (``FailedStartupServes500`` wraps it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import AppError, describe

__all__ = ["FailedStartupServes500", "unavailable_app"]


def _body(error: AppError) -> bytes:
    return (
        f"The app could not be started; it is served again once a source file changes.\n{error}\n"
    ).encode()


def unavailable_app(error: AppError) -> Callable[..., Any]:
    """A WSGI app that answers every request with 500 and ``error``."""
    body = _body(error)
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]

    def unavailable(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("500 Internal Server Error", headers)
        return [body]

    return unavailable


class FailedStartupServes500:
    """An ASGI app whose failed lifespan startup leaves it answering 500 instead of failing.

    When the app reports ``lifespan.startup.failed``, the server is told that
    the startup completed, ``on_failure`` is called with an ``AppError``
    (whose ``__cause__`` is the app's exception, if it raised one), and every
    later HTTP request is answered with a 500 that names the error. An app
    that raises without reporting a failure is left to the server, which
    takes that to mean the app does not support the lifespan protocol.
    """

    def __init__(self, app: Any, on_failure: Callable[[AppError], object]) -> None:
        self.app = app
        self._on_failure = on_failure
        self._failure: AppError | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self._failure is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            body = _body(self._failure)
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        else:  # a websocket: refuse it
            await send({"type": "websocket.close", "code": 1011})

    async def _lifespan(self, scope: Any, receive: Any, send: Any) -> None:
        reported: list[str] = []

        async def send_but_failure(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                reported.append(str(message.get("message") or ""))
            else:
                await send(message)

        cause: BaseException | None = None
        try:
            await self.app(scope, receive, send_but_failure)
        except Exception as exc:
            if not reported:
                raise
            cause = exc
        if not reported:
            return
        why = describe(cause) if cause is not None else reported[0].strip() or "no reason given"
        failure = AppError(f"the ASGI lifespan startup failed: {why}")
        failure.__cause__ = cause
        self._failure = failure
        self._on_failure(failure)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
