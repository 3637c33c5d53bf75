"""A real uvicorn serving hosted_module:app on a socket bound here, reported before serving.

The socket listens before uvicorn runs, so the test may connect as soon as it
has the port: connections wait in the backlog until uvicorn accepts them.
"""

from __future__ import annotations

import os
import socket

import uvicorn
from report import report

os.environ["SITEBUS_TEST_PROTOCOL"] = "asgi"
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(64)
report(f"listening {sock.getsockname()[1]}")
config = uvicorn.Config("hosted_module:app", lifespan="on", log_level="info")
# Once shut down, uvicorn raises the SIGTERM it caught again, with the
# default handler back: the process ends by that signal, as the uvicorn command does.
uvicorn.Server(config).run(sockets=[sock])
