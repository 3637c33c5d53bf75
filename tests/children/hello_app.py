"""Small WSGI and ASGI apps for the server tests.

``/`` answers ``hello <pid>``; ``/slow?MS`` answers the same after MS
milliseconds (500 by default), first reporting ``slow`` to the test when run
in a child with a report pipe; ``/log`` logs "the app logs too" at INFO.
``asgi`` is the same app for ASGI, and reports its lifespan events;
``failing_startup`` and ``slow_startup`` are ASGI apps whose lifespan startup
fails, or takes a minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any


def _report(line: str) -> None:
    fd = os.environ.get("SITEBUS_TEST_REPORT_FD")
    if fd is not None:
        os.write(int(fd), line.encode() + b"\n")


def _body() -> bytes:
    return f"hello {os.getpid()}".encode()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/log":
        logging.getLogger("hello_app").info("the app logs too")
    if environ["PATH_INFO"] == "/slow":
        _report("slow")
        time.sleep(int(environ.get("QUERY_STRING") or "500") / 1000)
    body = _body()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _report("lifespan startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                _report("lifespan shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/log":
        logging.getLogger("hello_app").info("the app logs too")
    if scope["path"] == "/slow":
        _report("slow")
        await asyncio.sleep(int(scope.get("query_string", b"").decode() or "500") / 1000)
    body = _body()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _connect_database() -> None:
    raise RuntimeError("no database")


async def failing_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app whose lifespan startup fails, as Starlette reports it: message, then raise."""
    assert scope["type"] == "lifespan"
    await receive()
    try:
        _connect_database()
    except RuntimeError:
        await send({"type": "lifespan.startup.failed", "message": "see the traceback"})
        raise


async def slow_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``asgi``, whose lifespan startup takes a minute; reports ``lifespan startup`` first."""
    if scope["type"] == "lifespan":
        await receive()
        _report("lifespan startup")
        await asyncio.sleep(60)  # the slow start under test; the test interrupts it
    await asgi(scope, receive, send)
