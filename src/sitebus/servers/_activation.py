"""Listening sockets systemd passes at start: socket activation and the FD store.

systemd hands a service descriptors 3, 4, ... and says so in three
variables: ``LISTEN_FDS`` (how many), ``LISTEN_PID`` (the process they are
for) and ``LISTEN_FDNAMES`` (their names, colon-separated: a socket unit's
``FileDescriptorName=``, else the unit's own name ending in ``.socket``; for
a descriptor kept in the FD store, the ``FDNAME=`` it was stored with).

This module reads them once per process, as ``sd_listen_fds`` does with
``unset_environment`` set: the variables are removed at once, so neither a
child process nor the re-executed image (which keeps the PID, and would
otherwise believe the descriptors are still to be taken) sees them again.
What was passed stays in a pool, for the ``Sockets`` plugins to claim at
start; what nobody claims is closed once the bus has started.

A descriptor is for this process only when ``LISTEN_PID`` is its PID: one
inherited from a parent that was activated is not ours, and the servers bind
as configured.

Names of the sockets a site stores in the FD store itself (``store_name``)
are derived from the bind they serve, so that each maps back to exactly that
bind on the next start, whichever ``[[server]]`` it moved to.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping, MutableMapping

from ..errors import BindError
from ._address import Address

__all__ = [
    "FIRST_FD",
    "Passed",
    "check_name",
    "claim",
    "claim_stored_at",
    "is_stored_name",
    "passed",
    "read",
    "store_name",
    "take_unclaimed",
    "under_systemd",
]

FIRST_FD = 3  # SD_LISTEN_FDS_START
VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
NAME_MAX = 255  # systemd's FDNAME_MAX
# The names systemd gives when nobody chose one: no LISTEN_FDNAMES at all,
# and FDSTORE=1 without FDNAME=. A socket unit's own name ends in ".socket".
DEFAULT_NAMES = ("unknown", "stored")
STORE_PREFIX = "sitebus-bind="
# The most descriptors a process can be passed; far beyond any site.
_COUNT_MAX = 65536


class Passed:
    """One descriptor systemd passed: its number, its name, whether a bind took it."""

    __slots__ = ("claimed", "fd", "name")

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.claimed = False

    @property
    def default_named(self) -> bool:
        """True when nobody named it: it goes to the next bind that got no named one."""
        return self.name in DEFAULT_NAMES or self.name.endswith(".socket")

    @property
    def stored(self) -> bool:
        """True when a site stored it in the FD store under a bind's ``store_name``."""
        return is_stored_name(self.name)

    def __repr__(self) -> str:
        return f"Passed({self.fd}, {self.name!r})"


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be a descriptor name, as systemd's ``FileDescriptorName=``; else None."""
    if not name:
        return "is empty"
    if len(name) > NAME_MAX:
        return f"is {len(name)} characters long: at most {NAME_MAX}"
    if not all(" " <= char <= "~" for char in name):
        return "holds a character that is not printable ASCII"
    if ":" in name:
        return "holds ':', which separates the names in LISTEN_FDNAMES"
    if is_stored_name(name):
        return f"starts with {STORE_PREFIX!r}, which names the sockets a site stores itself"
    return None


def store_name(spec: str) -> str:
    """The ``FDNAME=`` a socket bound for the address ``spec`` is stored under.

    ``sitebus-bind=`` and the spec, with ``%``, ``:`` and anything that is
    not printable ASCII written as ``%XX`` (UTF-8 bytes), so that it is a
    valid name and one spec gives one name; a name that would exceed 255
    characters ends in a hash of the spec instead.
    """
    escaped = "".join(
        char if " " <= char <= "~" and char not in "%:" else _percent(char) for char in spec
    )
    name = STORE_PREFIX + escaped
    if len(name) > NAME_MAX:
        import hashlib  # only for a spec this long: a cost every start need not pay

        name = STORE_PREFIX + "sha256-" + hashlib.sha256(spec.encode()).hexdigest()
    return name


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def is_stored_name(name: str) -> bool:
    """True for a name ``store_name`` made."""
    return name.startswith(STORE_PREFIX)


def read(environ: Mapping[str, str], pid: int) -> list[Passed]:
    """The descriptors ``environ`` passes to process ``pid``; none when they are for another.

    Raises ``BindError`` naming the variable when ``LISTEN_FDS`` is not a
    count, or ``LISTEN_FDNAMES`` does not hold one name per descriptor.
    """
    owner = environ.get("LISTEN_PID")
    if owner is None or owner.strip() != str(pid):
        return []
    count_text = environ.get("LISTEN_FDS", "")
    if not (count_text.isascii() and count_text.isdigit()) or int(count_text) > _COUNT_MAX:
        raise BindError(
            f"LISTEN_FDS={count_text!r} is not a number of descriptors: expected 0 to {_COUNT_MAX}"
        )
    count = int(count_text)
    names_text = environ.get("LISTEN_FDNAMES")
    if names_text is None:
        names = ["unknown"] * count
    else:
        names = names_text.split(":") if count else []
        if len(names) != count:
            raise BindError(
                f"LISTEN_FDNAMES={names_text!r} names {len(names)} descriptor(s), "
                f"but LISTEN_FDS={count_text} passes {count}: expected one name for each"
            )
    return [Passed(FIRST_FD + index, name) for index, name in enumerate(names)]


_pool: list[Passed] | None = None
_error: BindError | None = None


def passed(environ: MutableMapping[str, str] | None = None) -> list[Passed]:
    """This process's pool of passed descriptors, read from the environment the first time.

    The variables are removed from ``environ`` (``os.environ``) whatever
    they held. Every descriptor is made close-on-exec at once, as
    ``sd_listen_fds`` does: a child must not inherit a listener it does not
    serve. A malformed pool raises its ``BindError`` at every call, so every
    ``Sockets`` plugin fails the start with the same line.
    """
    global _pool, _error
    if _pool is None and _error is None:
        env = os.environ if environ is None else environ
        try:
            _pool = read(env, os.getpid())
        except BindError as exc:
            _error = exc
        for name in VARIABLES:
            env.pop(name, None)
        for entry in _pool or ():
            with contextlib.suppress(OSError):  # not open: adopting it says so
                os.set_inheritable(entry.fd, False)
    if _error is not None:
        raise _error
    assert _pool is not None
    return _pool


def under_systemd() -> bool:
    """Whether systemd started this process: it set ``NOTIFY_SOCKET`` or passed sockets.

    Reads the pool (and so removes the ``LISTEN_*`` variables) if no
    ``Sockets`` plugin did yet; a malformed pool counts, and fails the start.
    """
    if os.environ.get("NOTIFY_SOCKET"):
        return True
    try:
        return bool(passed())
    except BindError:
        return True


def claim(spec: str, fd: int | None, server_name: str) -> Passed | None:
    """The passed descriptor for one bind, marked claimed; None when none is for it.

    For ``fd://N``, descriptor N. Else, in turn: the one stored under the
    bind's own ``store_name``; the next one named ``server_name`` (a socket
    unit's ``FileDescriptorName=``); the next one nobody named.
    """
    pool = passed()
    if fd is not None:
        return _first(pool, lambda entry: entry.fd == fd)
    found = _first(pool, lambda entry: entry.name == store_name(spec))
    if found is None and server_name:
        found = _first(pool, lambda entry: entry.name == server_name)
    if found is None:
        found = _first(pool, lambda entry: entry.default_named)
    return found


def claim_stored_at(address: Address) -> Passed | None:
    """The unclaimed socket from the FD store already bound to ``address``, claimed.

    For an address written anew (``localhost:8080`` for ``127.0.0.1:8080``):
    its stored socket has another name, and holds the address.
    """
    wanted = _bound_address(address)
    if wanted is None:
        return None
    return _first(passed(), lambda entry: entry.stored and _sockname(entry.fd) == wanted)


def _sockname(fd: int) -> object:
    """The local address descriptor ``fd`` is bound to; None if it is not a socket."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        return sock.getsockname()
    except OSError:
        return None
    finally:
        sock.detach()


def _bound_address(address: Address) -> object:
    """What ``getsockname()`` answers for a socket bound to ``address``, where it can be known."""
    if address.kind == "unix":
        return address.path
    if address.kind != "tcp" or address.port == 0:
        return None  # any free port: never the same socket as a stored one
    try:
        infos = socket.getaddrinfo(
            address.host or None, address.port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except OSError:
        return None
    return infos[0][4]


def _first(pool: list[Passed], wanted: Callable[[Passed], bool]) -> Passed | None:
    for entry in pool:
        if not entry.claimed and wanted(entry):
            entry.claimed = True
            return entry
    return None


def take_unclaimed() -> list[Passed]:
    """The passed descriptors no bind claimed, removed from the pool (the caller closes them)."""
    if _pool is None:
        return []
    left = [entry for entry in _pool if not entry.claimed]
    for entry in left:
        entry.claimed = True
    return left
