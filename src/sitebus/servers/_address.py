"""Listening addresses as written on a command line or in a config file.

Four forms: ``HOST:PORT``, ``[IPV6]:PORT``, ``unix:/PATH`` and ``fd://N`` (a
descriptor inherited from the parent, already bound and listening). Parsing is
separate from binding so that a typo fails before anything is bound.
"""

from __future__ import annotations

import socket

from .._options import Options
from ..errors import BindError

__all__ = ["Address", "parse_address"]

_FD_MAX = 2**31 - 1  # descriptors are C ints
FORMS = '"HOST:PORT", "[IPV6]:PORT", "unix:/PATH" or "fd://N"'


class Address(Options):
    """One parsed listening address; ``spec`` is the text it came from.

    ``kind`` is ``"tcp"`` (``host``, ``port``), ``"unix"`` (``path``) or
    ``"fd"`` (``fd``). An empty host means every interface.
    """

    spec: str
    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        return self.spec


def parse_address(spec: str) -> Address:
    """Parse ``spec``; raise ``BindError`` quoting it when it has none of the forms."""
    text = spec.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path or "\0" in path:
            raise _malformed(spec, "the socket path is empty or holds a NUL character")
        return Address(spec=spec, kind="unix", path=path)
    if text.startswith("fd://"):
        number = text[len("fd://") :]
        if not _is_number(number) or int(number) > _FD_MAX:
            raise _malformed(spec, f"{number!r} is not a descriptor number")
        return Address(spec=spec, kind="fd", fd=int(number))
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":") or not host:
            raise _malformed(spec, "an IPv6 address is written [ADDRESS]:PORT")
        return Address(spec=spec, kind="tcp", host=host, port=_port(spec, rest[1:]))
    host, sep, port = text.rpartition(":")
    if not sep:
        raise _malformed(spec, "the port is missing")
    if ":" in host:
        raise _malformed(spec, "write an IPv6 address in brackets, as [::1]:8080")
    return Address(spec=spec, kind="tcp", host=host, port=_port(spec, port))


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts "²", which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def _port(spec: str, text: str) -> int:
    if not _is_number(text) or int(text) > 65535:
        raise _malformed(spec, f"the port {text!r} is not a number from 0 to 65535")
    return int(text)


def _malformed(spec: str, why: str) -> BindError:
    return BindError(f'Address "{spec}" must be in format {FORMS}: {why}.')


def url(sock: socket.socket) -> str:
    """The URL a client uses to reach ``sock``, for the "serving on" line."""
    if sock.family == socket.AF_UNIX:
        return f"http+unix://{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"
