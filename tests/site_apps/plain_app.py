"""A plain WSGI app that answers with what it was given: the path split and a trail.

``test.trail`` (in the environ, or in the ASGI scope behind the ASGI
dispatcher) is the list the middleware in ``middleware.py`` append to, in
the order they saw the request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    # Behind the ASGI dispatcher, ASGI middleware left their trail in the scope.
    scope_trail = environ.get("asgi.scope", {}).get("test.trail", [])
    trail = ",".join([*scope_trail, *environ.get("test.trail", [])])
    body = f"plain script_name={environ['SCRIPT_NAME']!r} path_info={environ['PATH_INFO']!r}"
    body += f" trail={trail}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
