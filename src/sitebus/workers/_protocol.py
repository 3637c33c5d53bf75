"""What a master hands a worker, and the lines a worker sends back.

A worker is a child, not a re-exec: it has a PID of its own, so the
re-exec's hand-over (``_handover``, checked against the PID that wrote it)
cannot carry its sockets. The master instead starts it with one
environment variable holding JSON, and the descriptors that record names
passed with ``pass_fds``::

    {"master": 4242, "control": 7, "sockets": [["127.0.0.1:8080", 5]],
     "site": {"kind": "serve", ...}, "heartbeat": 7.5, "max_requests": 0,
     "max_requests_jitter": 0}

The record names the master's PID, and a worker whose parent is another
process ignores it (as ``LISTEN_PID`` does for systemd): a grandchild that
merely inherited the environment must not take descriptors not its own.

``control`` is the worker's end of a socket pair. The worker writes one
line per event; the master writes one line only, ``drain``, as the site
begins to stop (the worker's readiness probe answers 503 from then on while
the master waits its drain delay), so the worker reads end-of-file exactly
when the master is gone, however it died. The worker's lines:

- ``ready``: the worker's bus is started, its servers accept;
- ``beat REQUESTS RSS``: alive and responsive, with the requests served so
  far and the resident memory in bytes;
- ``stopping``: the worker stops by itself (its ``max_requests``, an
  ``exit()`` of its own) or as asked; a stop may take the graceful timeout;
- ``watch PATH``: under autoreload, a source file of the site that this
  worker imported (or that failed to import), for the master's watcher: the
  master imports none of them itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["DRAIN", "ENV", "Message", "parse", "read_rss", "take_record"]

ENV = "SITEBUS_WORKER"
DRAIN = b"drain\n"


class Message:
    """One line from a worker: ``kind`` and, for a beat, its two counts; for a watch, a path."""

    __slots__ = ("kind", "path", "requests", "rss")

    def __init__(self, kind: str, requests: int = 0, rss: int = 0, path: str = "") -> None:
        self.kind = kind
        self.requests = requests
        self.rss = rss
        self.path = path

    def encode(self) -> bytes:
        if self.kind == "beat":
            return f"beat {self.requests} {self.rss}\n".encode()
        if self.kind == "watch":
            return b"watch " + os.fsencode(self.path) + b"\n"
        return f"{self.kind}\n".encode()


def parse(line: bytes) -> Message | None:
    """The message a line holds; None for a line that is none (ignored, not fatal)."""
    if line.startswith(b"watch /"):
        return Message("watch", path=os.fsdecode(line[6:]))
    parts = line.decode("ascii", "replace").split()
    if parts in (["ready"], ["stopping"]):
        return Message(parts[0])
    if len(parts) == 3 and parts[0] == "beat" and parts[1].isdigit() and parts[2].isdigit():
        return Message("beat", int(parts[1]), int(parts[2]))
    return None


def take_record() -> dict[str, Any] | None:
    """This worker's record, removed from the environment; None unless its parent wrote it."""
    text = os.environ.pop(ENV, None)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("master") != os.getppid():
        return None
    return record


def read_rss() -> int:
    """This process's resident memory in bytes, from ``/proc``; 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")
