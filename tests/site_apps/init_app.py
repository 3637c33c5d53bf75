"""A WSGI app for the PID 1 tests: it tells its process's place, runs a command, leaves an orphan.

``/`` answers ``pid=P ppid=Q`` (as the app's PID namespace numbers them);
``/exit7`` runs ``sh -c 'exit 7'`` with ``subprocess.run`` and answers the
status it got; ``/orphan`` double-forks a grandchild that outlives its parent
and then exits, and answers ``orphan pid=N ppid=M`` once it has: M is the
grandchild's parent after its own parent was reaped, the process that must
now reap it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/exit7":
        body = str(subprocess.run(["sh", "-c", "exit 7"], check=False).returncode)
    elif path == "/orphan":
        body = f"orphan {_orphan()}"
    else:
        body = f"pid={os.getpid()} ppid={os.getppid()}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


def _orphan() -> str:
    """``pid=N ppid=M`` of a grandchild whose parent has been reaped; it has exited on return."""
    go_read, go_write = os.pipe()  # EOF for the grandchild: its parent is gone for good
    said_read, said_write = os.pipe()  # what it says, then EOF: it has exited
    parent = os.fork()
    if parent == 0:  # only os calls from here on: a fork of a threaded process
        if os.fork() == 0:
            os.close(go_write)
            os.read(go_read, 1)
            os.write(said_write, f"pid={os.getpid()} ppid={os.getppid()}".encode())
            os._exit(0)
        os._exit(0)
    os.close(go_read)
    os.close(said_write)
    # Reaped means past its exit, where the kernel gave its child a new parent.
    os.waitpid(parent, 0)
    os.close(go_write)
    said = b""
    while chunk := os.read(said_read, 64):
        said += chunk
    os.close(said_read)
    return said.decode()
