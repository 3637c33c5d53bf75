"""The one record a process hands to its own re-exec: what the next image takes over.

A restart replaces the process image but keeps its PID, its environment and
every descriptor not marked close-on-exec. Whatever must survive (listening
sockets, the PID file's locked descriptor, the daemon marker, the autoreload
clock, the signals held back, an exit asked for too late to stop the restart)
goes into one record: one environment variable holding JSON, in sections
named by their owners::

    {"pid": 4242, "sections": {"sockets": [...], "exit": 0}, "fds": {"sockets": [5, 6]}}

The record carries the PID, as systemd's ``LISTEN_PID`` does: a re-exec keeps
the PID, while a child process that merely inherited the environment has
another one and ignores the record (its descriptors are not its own).

Protocol: plugins ``put()`` during the restart's teardown (autoreload just
before asking for it); in the next image they ``take()`` their section at
start, and ``block()`` then closes the descriptors of the sections nobody
took (``close_unclaimed()``): a changed configuration must not leave a
listening socket that nobody accepts on, or a PID file locked by nobody.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from typing import Any

__all__ = ["ENV", "close_unclaimed", "put", "take"]

ENV = "SITEBUS_HANDOVER"


def _read() -> dict[str, Any]:
    """This process's record, or an empty one (absent, malformed or another PID's)."""
    text = os.environ.get(ENV)
    if text is None:
        return {}
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("pid") != os.getpid():
        # Inherited from a parent: not ours. Dropped, so our children never see it.
        del os.environ[ENV]
        return {}
    return record


def _write(record: dict[str, Any]) -> None:
    if record.get("sections"):
        record["pid"] = os.getpid()
        os.environ[ENV] = json.dumps(record, separators=(",", ":"))
    else:
        os.environ.pop(ENV, None)


def put(section: str, value: Any, fds: Iterable[int] = ()) -> None:
    """Hand ``value`` (JSON-able) to the next image under ``section``, replacing any.

    ``fds`` are the descriptors the value refers to: they are made inheritable
    here, and closed by the next image if no plugin takes the section.
    """
    record = _read()
    record.setdefault("sections", {})[section] = value
    owned = sorted(set(fds))
    for fd in owned:
        os.set_inheritable(fd, True)
    all_fds = record.setdefault("fds", {})
    if owned:
        all_fds[section] = owned
    else:
        all_fds.pop(section, None)
    _write(record)


def take(section: str) -> Any:
    """Remove ``section`` from the record and return its value; None if absent.

    The taker now owns the section's descriptors (and should make them
    non-inheritable once adopted).
    """
    record = _read()
    sections = record.get("sections", {})
    if section not in sections:
        return None
    value = sections.pop(section)
    record.get("fds", {}).pop(section, None)
    _write(record)
    return value


def close_unclaimed() -> None:
    """Close the descriptors of every section nobody took, and drop those sections.

    Sections without descriptors stay for a late taker (the autoreload
    watcher reads its clock from its own thread, after start).
    """
    record = _read()
    for section, fds in record.pop("fds", {}).items():
        record.get("sections", {}).pop(section, None)
        for fd in fds:
            with contextlib.suppress(OSError):  # already closed, or never ours
                os.close(fd)
    _write(record)
