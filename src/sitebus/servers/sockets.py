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

Under systemd the first image may also be passed listeners (``_activation``:
socket activation and the FD store), which it adopts instead of binding. Such
a listener is held by systemd as well and outlives the process: a stop for an
exit neither holds it off nor removes its socket file, it only closes this
process's copy, and connections that arrive meanwhile wait in its queue for the
next process. Every listener this process binds itself is offered on the
``listening`` channel, where the ``Systemd`` plugin puts it in the FD store.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from logging import WARNING

from .. import _handover
from .._options import Options, check_range
from ..bus import Bus, State
from ..errors import BindError, ConfigError
from ..plugin import Plugin, StartOrder, priority
from . import _activation
from ._activation import Passed, store_name
from ._address import Address, parse_address, url
from ._holdoff import hold_off_syn, release_hold, wait_queue_empty

__all__ = ["Listener", "Sockets", "SocketsOptions", "bind"]


class SocketsOptions(Options):
    """What to listen on.

    ``binds``: address specs (see ``parse_address``). ``backlog``: the listen
    queue length, which also bounds how many connections can wait across a
    restart. ``unix_mode``: permission bits for Unix socket files (None keeps
    the umask's). ``drain_quiet``: how long a listener must stay without queued
    connections during a stop before it is closed (covers handshakes in flight).
    ``name``: the descriptor name (a socket unit's ``FileDescriptorName=``)
    whose passed sockets these binds adopt first, in order.
    """

    binds: tuple[str, ...] = ("127.0.0.1:8080",)
    backlog: int = 1024
    unix_mode: int | None = None
    drain_quiet: float = 0.05
    name: str = ""

    def __post_init__(self) -> None:
        # The kernel caps the backlog lower still (net.core.somaxconn).
        check_range(self, "backlog", 1, 65535, "a queue length from 1 to 65535")
        check_range(self, "unix_mode", 0, 0o777, "permission bits 0 to 777 (octal)")
        problem = _activation.check_name(self.name) if self.name else None
        if problem is not None:
            raise ConfigError(
                f"SocketsOptions.name: {self.name!r} {problem}: expected a descriptor name "
                "as systemd's FileDescriptorName= takes"
            )


# Who else holds a listener, which decides how a stop for an exit treats it.
BOUND = "bound"  # nobody: this process (or an image before it) bound it
ACTIVATED = "activated"  # a systemd socket unit passed it
STORED = "stored"  # systemd keeps a copy in the FD store


class Listener:
    """A bound, listening socket and the address it was configured as.

    ``unix_path`` and ``unix_inode`` name the socket file this process
    created: a stop removes it only if it is still ours, and then clears
    ``unix_path`` so that it is never removed twice. ``origin`` says who
    else holds the socket: ``"bound"`` (nobody), ``"activated"`` (a systemd
    socket unit) or ``"stored"`` (systemd's FD store).
    """

    __slots__ = ("address", "origin", "socket", "unix_inode", "unix_path")

    def __init__(
        self,
        address: Address,
        sock: socket.socket,
        *,
        unix_path: str | None = None,
        unix_inode: int | None = None,
        origin: str = BOUND,
    ) -> None:
        self.address = address
        self.socket = sock
        self.unix_path = unix_path
        self.unix_inode = unix_inode
        self.origin = origin

    @property
    def url(self) -> str:
        return url(self.socket)

    @property
    def kept_by_systemd(self) -> bool:
        """True when systemd holds the socket too: it outlives this process."""
        return self.origin != BOUND

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
        # Read before anything forks (a daemon plugin) or runs a child: the
        # variables name this PID, and are removed from the environment now.
        with contextlib.suppress(BindError):  # raised again by start()
            _activation.passed()

    @priority(StartOrder.SOCKETS)
    def start(self) -> None:
        handed = _take_handed()
        try:
            for address in self.addresses:
                found = _claim(handed, address.spec)
                if found is not None:
                    fd, origin = found
                    listener = adopt(address, fd, origin=origin)
                else:
                    listener = self._activated(address) or self._bind(address)
                self.listeners.append(listener)
                if listener.origin == BOUND:
                    self._offer(listener)
        finally:
            # What this plugin did not claim stays for the next Sockets plugin;
            # block() closes what nobody claimed once the bus has started.
            _put_handed(handed)

    def _activated(self, address: Address) -> Listener | None:
        """The listener systemd passed for ``address``, adopted; None when it passed none."""
        fd = address.fd if address.kind == "fd" else None
        passed = _activation.claim(address.spec, fd, self.options.name)
        if passed is None:
            return None
        origin = STORED if passed.stored else ACTIVATED
        listener = adopt(address, passed.fd, origin=origin)
        how = "from the FD store" if passed.stored else "by socket activation"
        self.bus.log(
            f'Adopted {listener.url} for "{address}" {how} '
            f"(descriptor {passed.fd}, named {passed.name!r})"
        )
        return listener

    def _bind(self, address: Address) -> Listener:
        """Bind ``address``; if it is in use by a socket from the FD store, adopt that one.

        A stored socket is found by its name, made from the address as the
        site file wrote it. Written another way (``localhost:8080`` for
        ``127.0.0.1:8080``), the name no longer matches, the stored socket
        still holds the address, and binding it fails at every start.
        """
        try:
            return bind(address, self.options)
        except BindError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE):
                raise
            passed = _activation.claim_stored_at(address)
            if passed is None:
                raise
        listener = adopt(address, passed.fd, origin=STORED)
        self.bus.log(
            f'Adopted {listener.url} for "{address}" from the FD store, where it was stored '
            f"as {passed.name!r} (descriptor {passed.fd})"
        )
        return listener

    def _offer(self, listener: Listener) -> None:
        """Publish ``listening``; a listener that keeps a copy (the FD store) returns True."""
        name = store_name(listener.address.spec)
        if any(self.bus.publish("listening", name, listener.socket)):
            listener.origin = STORED

    def state(self, state: State) -> None:
        """Once the bus has started, close the passed descriptors no bind claimed."""
        if state is State.STARTED:
            for passed in _activation.take_unclaimed():
                self._close_unclaimed(passed)

    def _close_unclaimed(self, passed: Passed) -> None:
        self.bus.log(
            f"Closing descriptor {passed.fd} (named {passed.name!r}) that systemd passed: "
            "no bind of the site claims it",
            WARNING,
        )
        with contextlib.suppress(OSError):
            os.close(passed.fd)
        if passed.stored:
            # Stored by an earlier run for a bind the configuration no longer has.
            self.bus.publish("stale_listener", passed.name)

    @priority(StartOrder.SOCKETS)
    def stop(self) -> None:
        listeners, self.listeners = self.listeners, []
        if self.bus.restarting:
            mine: list[tuple[str, int, str]] = []
            for listener in listeners:
                mine.append((listener.address.spec, listener.socket.fileno(), listener.origin))
                # detach(): the socket object must not close the descriptor
                # when it is collected before the exec.
                listener.socket.detach()
            # Stops run in reverse start order: the plugins started earlier
            # stop later and go in front, so the list stays in start order.
            _put_handed(mine + _take_handed())
            self.bus.log(f"Keeping {len(mine)} listening socket(s) open for the re-exec")
            return
        for listener in listeners:
            if not listener.kept_by_systemd:  # its file leads the next process to it
                _remove_socket_file(listener)
            listener.socket.close()

    def hold_off(self) -> None:
        """Stop new connections from being queued; queued ones stay to be served.

        Not on a listener systemd keeps: it outlives us, and what queues on it
        is for the next process (a filter left on it would starve that one).
        """
        for listener in self._ours():
            if listener.unix_path is not None:
                _remove_socket_file(listener)
            else:
                hold_off_syn(listener.socket)

    def wait_drained(self, deadline: float) -> bool:
        """Wait (until ``deadline``, monotonic) for the engines to accept what is queued."""
        socks = [listener.socket for listener in self._ours()]
        return not socks or wait_queue_empty(socks, self.options.drain_quiet, deadline)

    def _ours(self) -> list[Listener]:
        """The listeners that end with this process (systemd keeps none of them)."""
        return [listener for listener in self.listeners if not listener.kept_by_systemd]


_SECTION = "sockets"


def _take_handed() -> list[tuple[str, int, str]]:
    """The ``[spec, descriptor, origin]`` entries in the hand-over, removed from it."""
    handed = _handover.take(_SECTION) or []
    taken = []
    for entry in handed:
        spec, fd, *rest = entry
        if isinstance(fd, int):
            origin = rest[0] if rest and rest[0] in (ACTIVATED, STORED) else BOUND
            taken.append((str(spec), fd, origin))
    return taken


def _put_handed(handed: list[tuple[str, int, str]]) -> None:
    if handed:
        _handover.put(_SECTION, handed, (fd for _, fd, _ in handed))


def _claim(handed: list[tuple[str, int, str]], spec: str) -> tuple[int, str] | None:
    """Remove and return the first handed-over descriptor for ``spec``, and its origin."""
    for index, (handed_spec, fd, origin) in enumerate(handed):
        if handed_spec == spec:
            del handed[index]
            return fd, origin
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


def adopt(address: Address, fd: int, *, origin: str = BOUND) -> Listener:
    """Take over descriptor ``fd``, which must be a listening stream socket.

    A socket filter an earlier process left on it (a stop's hold-off) is
    removed: it would drop every new connection.
    """
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
    release_hold(sock)
    listener = Listener(address, sock, origin=origin)
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
