"""One worker process as the master sees it: how it is started, what is known of it.

``start_worker`` runs ``python -m sitebus.workers.worker`` with the
listening sockets and its end of a fresh control socket passed by
descriptor, and the hand-over record (``_protocol``) in its environment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from . import _protocol

__all__ = ["WorkerInfo", "describe_status", "start_worker"]

# Variables that speak to one process only: the master's own systemd
# notification and activation, and the re-exec's hand-over record.
_MASTER_ONLY_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "SITEBUS_HANDOVER",
)


def start_worker(
    command: Sequence[str], listeners: Sequence[tuple[str, socket.socket]], record: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start one worker; return it and the master's end of its control socket.

    Raises ``OSError`` when the process cannot be started.
    """
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    record = {
        **record,
        "master": os.getpid(),
        "control": child.fileno(),
        "sockets": [[spec, sock.fileno()] for spec, sock in listeners],
    }
    env = {k: v for k, v in os.environ.items() if k not in _MASTER_ONLY_ENV}
    env[_protocol.ENV] = json.dumps(record, separators=(",", ":"))
    fds = [child.fileno()] + [sock.fileno() for _, sock in listeners]
    try:
        process = subprocess.Popen(list(command), pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
    except OSError:
        parent.close()
        raise
    finally:
        child.close()
    parent.setblocking(False)
    return process, parent


class WorkerInfo:
    """What the master knows of one worker; ``state``: booting, serving or stopping."""

    __slots__ = (
        "beat",
        "buffer",
        "conn",
        "deadline",
        "generation",
        "process",
        "requests",
        "rss",
        "started",
        "started_wall",
        "state",
        "stop_reason",
    )

    def __init__(self, process: subprocess.Popen[bytes], conn: socket.socket, generation: int):
        self.process = process
        self.conn: socket.socket | None = conn
        self.generation = generation
        self.started = self.beat = time.monotonic()
        self.started_wall = time.time()
        self.state = "booting"
        self.requests = 0
        self.rss = 0
        self.deadline = 0.0  # of a stop, for a stopping worker
        self.buffer = b""
        self.stop_reason = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def status(self) -> dict[str, Any]:
        """The worker's line of ``sitebus status``, as JSON."""
        return {
            "pid": self.pid,
            "started": round(self.started_wall, 3),
            "state": self.state,
            "requests": self.requests,
            "rss": self.rss,
        }


def describe_status(status: int) -> str:
    """``status 1`` or ``killed by SIGKILL``: a Popen return code, for the log."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"status {status}"
