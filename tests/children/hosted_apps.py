"""Apps for the hosted sites: a WSGI app that says which process answered, and an
ASGI app that reports its lifespan."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from report import report

Message = MutableMapping[str, Any]


def pid_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"pid {os.getpid()} at {environ['SCRIPT_NAME']}".encode()]


async def lifespan_app(
    scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[..., Awaitable[None]]
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]  # startup or shutdown
            report(f"lifespan {kind} {os.getpid()}")
            await send({"type": f"{message['type']}.complete"})
            if kind == "shutdown":
                return
    body = f"asgi pid {os.getpid()} root_path {scope['root_path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
