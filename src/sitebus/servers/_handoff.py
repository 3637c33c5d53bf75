"""Listening sockets handed from a process to its own re-exec, as socket activation does.

Before a re-exec the old image leaves each listening descriptor open and
inheritable and writes, in the environment, which descriptor serves which
configured address; the new image adopts them instead of binding again. The
kernel keeps queueing connections on them the whole time, so none is refused
while the new code boots.

The record carries the PID, as systemd's ``LISTEN_PID`` does: a re-exec keeps
the PID, while a child process that merely inherited the environment has
another one and must not take descriptors that are not its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["FDS_ENV", "PID_ENV", "record", "take"]

FDS_ENV = "SITEBUS_LISTEN_FDS"
PID_ENV = "SITEBUS_LISTEN_PID"


def record(fds: Mapping[str, int]) -> None:
    """Write ``{address spec: descriptor}`` into ``os.environ`` for the next image.

    The descriptors themselves must already be inheritable.
    """
    # Specs may hold any character but a newline (a path may hold "=" or ";").
    os.environ[FDS_ENV] = "\n".join(f"{fd}={spec}" for spec, fd in fds.items())
    os.environ[PID_ENV] = str(os.getpid())


def take() -> dict[str, int]:
    """Remove the record from ``os.environ``; return it if it is this process's.

    Descriptors in a record meant for another process are left alone: they are
    not ours to close.
    """
    text = os.environ.pop(FDS_ENV, None)
    pid = os.environ.pop(PID_ENV, None)
    if not text or pid != str(os.getpid()):
        return {}
    fds: dict[str, int] = {}
    for line in text.split("\n"):
        number, sep, spec = line.partition("=")
        if sep and number.isdigit():
            fds[spec] = int(number)
    return fds


def close_unused(fds: Mapping[str, int], used: set[int]) -> None:
    """Close handed-over descriptors that no configured address took (the config changed)."""
    for fd in fds.values():
        if fd not in used:
            try:
                os.close(fd)
            except OSError:
                pass
