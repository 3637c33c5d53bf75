"""The listening sockets of a site, bound by the bus itself during ``start``.

Binding at ``StartOrder.SOCKETS``, before privileges drop and before any
engine serves, means a privileged port is bound while the process is still
root, and an address in use fails the start before anything serves: the bus
rolls back and the command line prints one line naming the address.

The sockets outlive the engines: on a restart they stay open across the
re-exec and the next image adopts them (see ``_handover``), so connections wait
in the kernel's queue instead of being refused. Every ``Sockets`` plugin of a
site shares the hand-over's ``sockets`` section: a list of ``[spec,
descriptor]`` pairs in start order, from which each plugin claims, in start
order, the first entry of each of its addresses (two plugins may both bind
``127.0.0.1:0``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

from .. import _handover
from .._options import Options, check_range
from ..bus import Bus
from ..errors import BindError
from ..plugin import Plugin, StartOrder, priority
from ._address import Address, parse_address, url
from ._holdoff import hold_off_syn, wait_queue_empty

__all__ = ["Listener", "Sockets", "SocketsOptions", "bind"]


class SocketsOptions(Options):
    """What to listen on.

    ``binds``: address specs (see ``parse_address``). ``backlog``: the listen
    queue length, which also bounds how many connections can wait across a
    restart. ``unix_mode``: permission bits for Unix socket files (None keeps
    the umask's). ``drain_quiet``: how long a listener must stay without queued
    connections during a stop before it is closed (covers handshakes in flight).
    """

    binds: tuple[str, ...] = ("127.0.0.1:8080",)
    backlog: int = 1024
    unix_mode: int | None = None
    drain_quiet: float = 0.05

    def __post_init__(self) -> None:
        # The kernel caps the backlog lower still (net.core.somaxconn).
        check_range(self, "backlog", 1, 65535, "a queue length from 1 to 65535")
        check_range(self, "unix_mode", 0, 0o777, "permission bits 0 to 777 (octal)")


class Listener:
    """A bound, listening socket and the address it was configured as.

    ``unix_path`` and ``unix_inode`` name the socket file this process
    created: a stop removes it only if it is still ours, and then clears
    ``unix_path`` so that it is never removed twice.
    """

    __slots__ = ("address", "socket", "unix_inode", "unix_path")

    def __init__(
        self,
        address: Address,
        sock: socket.socket,
        *,
        unix_path: str | None = None,
        unix_inode: int | None = None,
    ) -> None:
        self.address = address
        self.socket = sock
        self.unix_path = unix_path
        self.unix_inode = unix_inode

    @property
    def url(self) -> str:
        return url(self.socket)

    def __repr__(self) -> str:
        return f"Listener({self.address.spec!r}, {self.socket!r})"


class Sockets(Plugin):
    """Binds (or adopts) the configured listeners at start, closes them at stop.

    A stop during a restart keeps them open and records them for the next
    image instead. ``hold_off()`` and ``wait_drained()`` are the first half of
    a graceful stop, called by the server plugins before they stop accepting.
    """

    def __init__(self, bus: Bus, options: SocketsOptions | None = None) -> None:
        super().__init__(bus)
        self.options = options or SocketsOptions()
        # Parse now: a malformed address is a usage error, not a start failure.
        self.addresses = [parse_address(spec) for spec in self.options.binds]
        self.listeners: list[Listener] = []

    @priority(StartOrder.SOCKETS)
    def start(self) -> None:
        handed = _take_handed()
        try:
            for address in self.addresses:
                fd = _claim(handed, address.spec)
                listener = bind(address, self.options) if fd is None else adopt(address, fd)
                self.listeners.append(listener)
        finally:
            # What this plugin did not claim stays for the next Sockets plugin;
            # block() closes what nobody claimed once the bus has started.
            _put_handed(handed)

    @priority(StartOrder.SOCKETS)
    def stop(self) -> None:
        listeners, self.listeners = self.listeners, []
        if self.bus.restarting:
            mine: list[tuple[str, int]] = []
            for listener in listeners:
                mine.append((listener.address.spec, listener.socket.fileno()))
                # detach(): the socket object must not close the descriptor
                # when it is collected before the exec.
                listener.socket.detach()
            # Stops run in reverse start order: the plugins started earlier
            # stop later and go in front, so the list stays in start order.
            _put_handed(mine + _take_handed())
            self.bus.log(f"Keeping {len(mine)} listening socket(s) open for the re-exec")
            return
        for listener in listeners:
            _remove_socket_file(listener)
            listener.socket.close()

    def hold_off(self) -> None:
        """Stop new connections from being queued; queued ones stay to be served."""
        for listener in self.listeners:
            if listener.unix_path is not None:
                _remove_socket_file(listener)
            else:
                hold_off_syn(listener.socket)

    def wait_drained(self, deadline: float) -> bool:
        """Wait (until ``deadline``, monotonic) for the engines to accept what is queued."""
        socks = [listener.socket for listener in self.listeners]
        return wait_queue_empty(socks, self.options.drain_quiet, deadline)


_SECTION = "sockets"


def _take_handed() -> list[tuple[str, int]]:
    """The ``[spec, descriptor]`` pairs in the hand-over, removed from it."""
    handed = _handover.take(_SECTION) or []
    return [(str(spec), fd) for spec, fd in handed if isinstance(fd, int)]


def _put_handed(handed: list[tuple[str, int]]) -> None:
    if handed:
        _handover.put(_SECTION, handed, (fd for _, fd in handed))


def _claim(handed: list[tuple[str, int]], spec: str) -> int | None:
    """Remove and return the first handed-over descriptor for ``spec``."""
    for index, (handed_spec, fd) in enumerate(handed):
        if handed_spec == spec:
            del handed[index]
            return fd
    return None


def bind(address: Address, options: SocketsOptions) -> Listener:
    """Bind and listen on ``address``; raise ``BindError`` naming it on failure."""
    if address.kind == "fd":
        return adopt(address, address.fd)
    if address.kind == "unix":
        return _bind_unix(address, options)
    # An ASCII name is passed as bytes: as a str it would make the socket
    # module load the IDNA codec to encode it, a millisecond of every start.
    host = address.host.encode("ascii") if address.host.isascii() else address.host
    try:
        infos = socket.getaddrinfo(
            host or None,
            address.port,
            socket.AF_UNSPEC,
            socket.SOCK_STREAM,
            0,
            socket.AI_PASSIVE,
        )
    except socket.gaierror as exc:
        raise BindError(
            f'Cannot bind "{address}": unknown host "{address.host}" ({exc.strerror})'
        ) from exc
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: small HTTP answers go out at once
        # instead of waiting on Nagle's algorithm for the client's ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(sockaddr)
        sock.listen(options.backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(address, exc) from exc
    return Listener(address, sock)


def adopt(address: Address, fd: int) -> Listener:
    """Take over descriptor ``fd``, which must be a listening stream socket."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        why = {errno.ENOTSOCK: "is not a listening socket", errno.EBADF: "is not open"}
        text = why.get(exc.errno or 0, f"cannot be used: {exc.strerror}")
        raise BindError(f'Cannot adopt "{address}": descriptor {fd} {text}') from exc
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise BindError(f'Cannot adopt "{address}": descriptor {fd} is not a listening socket')
    sock.set_inheritable(False)
    sock.setblocking(True)
    listener = Listener(address, sock)
    if address.kind == "unix" and sock.family == socket.AF_UNIX:
        listener.unix_path = address.path
        listener.unix_inode = _inode(address.path)
    return listener


def _bind_unix(address: Address, options: SocketsOptions) -> Listener:
    path = address.path
    _remove_stale(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if options.unix_mode is not None:
            os.chmod(path, options.unix_mode)
        sock.listen(options.backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(address, exc) from exc
    return Listener(address, sock, unix_path=path, unix_inode=_inode(path))


def _remove_stale(address: Address) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    path = address.path
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _bind_error(address, exc) from exc
    if not stat.S_ISSOCK(mode):
        raise BindError(f'Cannot bind "{address}": {path} exists and is not a socket')
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        raise _bind_error(address, exc) from exc
    finally:
        probe.close()
    raise BindError(f'Cannot bind "{address}": another process is listening on it')


def _remove_socket_file(listener: Listener) -> None:
    path, inode = listener.unix_path, listener.unix_inode
    listener.unix_path = None
    if path is not None and inode is not None and _inode(path) == inode:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _inode(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def _bind_error(address: Address, exc: OSError) -> BindError:
    if exc.errno == errno.EADDRINUSE:
        why = "address already in use"
    elif exc.errno == errno.EACCES and address.kind == "tcp" and 0 < address.port < 1024:
        why = "permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "no interface has that address"
    else:
        why = exc.strerror or str(exc)
    return BindError(f'Cannot bind "{address}": {why}')
