"""A WSGI app for the socket activation tests.

``/`` answers ``hello <pid>``; ``/env`` answers the ``LISTEN_*`` variables
the app can see in ``os.environ``, one ``NAME=value`` per line (nothing once
sitebus has taken them, as it should).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/env":
        seen = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("LISTEN_")]
        body = "\n".join(seen).encode()
    else:
        body = f"hello {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
