"""systemd: the notify protocol and the watchdog, without libsystemd.

systemd tells a service where to report in ``$NOTIFY_SOCKET``: the path of a
Unix datagram socket, or an abstract one when it starts with ``@``. Each
report is one datagram of ``KEY=value`` lines. This module sends, for a
``Type=notify`` or ``Type=notify-reload`` unit:

- ``READY=1`` once the bus is STARTED, that is after every start listener,
  the servers' included, ran: the sockets accept connections;
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC in microseconds)
  in the same datagram when a restart (re-exec) begins to stop, or before a
  graceful reload; then ``READY=1`` again once it is done;
- ``STOPPING=1`` when the bus begins to stop for an exit;
- ``STATUS=`` with the bus state on each transition;
- ``EXTEND_TIMEOUT_USEC=`` while a start or stop listener runs long but
  within the bus's ``listener_timeout``;
- ``MAINPID=`` when the daemon plugin forked the process that now runs the
  site;
- ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` while the bus is alive (see
  ``Systemd``);
- ``FDSTORE=1`` with ``FDNAME=`` and the descriptor itself (SCM_RIGHTS) for
  each listening socket the site bound itself, when systemd offers an FD
  store (``$FDSTORE``), so that ``systemctl restart`` hands the sockets to
  the next process; ``FDSTOREREMOVE=1`` for one stored by an earlier run that
  no bind claims any more.

Without ``$NOTIFY_SOCKET`` nothing is sent.
"""

from __future__ import annotations

import array
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from logging import WARNING
from typing import TYPE_CHECKING

from .._options import MAX_SECONDS, Options, check_range
from ..bus import State
from ..errors import ProcessError
from ..plugin import Plugin, StartOrder, priority

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["Systemd", "SystemdOptions", "fd_store_offered", "notify", "watchdog_interval"]

# Graceful listeners run in priority order: RELOADING=1 before all of them,
# READY=1 after all of them.
_FIRST = 0
_LAST = 100


def notify(
    message: str, environ: Mapping[str, str] | None = None, *, fds: Sequence[int] = ()
) -> bool:
    """Send ``message`` (``KEY=value`` lines) to ``$NOTIFY_SOCKET``; False when unset.

    ``fds`` travel with it as SCM_RIGHTS (``FDSTORE=1``). A value starting
    with ``@`` names an abstract socket. Raises
    ``ProcessError`` when the address is not a path or ``@name``, or when the
    datagram cannot be sent.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        raise ProcessError(
            f"NOTIFY_SOCKET={address!r} is not supported: expected the path of a Unix "
            "socket ('/run/...') or an abstract socket ('@name')"
        )
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            if fds:
                # Not socket.send_fds: it drops the address (CPython 3.11 and 3.12).
                rights = array.array("i", fds).tobytes()
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
                sock.sendmsg([message.encode()], ancillary, 0, target)
            else:
                sock.sendto(message.encode(), target)
    except OSError as exc:
        raise ProcessError(
            f"cannot notify systemd at NOTIFY_SOCKET={address!r}: {exc.strerror or exc}"
        ) from exc
    return True


def watchdog_interval(
    environ: Mapping[str, str] | None = None, *, replaced_pid: int | None = None
) -> float | None:
    """The watchdog timeout in seconds that systemd asks this process for; else None.

    None when ``$WATCHDOG_USEC`` is unset, not a positive integer, or when
    ``$WATCHDOG_PID`` names another process (as ``sd_watchdog_enabled`` does)
    than this one or ``replaced_pid``, the main process this one took over
    from with ``MAINPID=``.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid not in (str(os.getpid()), str(replaced_pid)):
        return None
    return int(usec) / 1_000_000


def fd_store_offered(environ: Mapping[str, str] | None = None) -> bool:
    """Whether systemd keeps descriptors for this service: ``$FDSTORE`` above 0.

    systemd 254 and later set it to ``FileDescriptorStoreMax=``; older ones
    do not, and a site under them does not store its sockets.
    """
    env = os.environ if environ is None else environ
    value = env.get("FDSTORE", "")
    return value.isascii() and value.isdigit() and int(value) > 0 and bool(env.get("NOTIFY_SOCKET"))


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class SystemdOptions(Options):
    """What to send besides the state.

    ``watchdog``: ping ``WATCHDOG=1`` when ``$WATCHDOG_USEC`` asks for it.
    ``extend_every``: while one start or stop listener has been running this
    many seconds and is still within the bus's ``listener_timeout``, ask
    systemd for more time (``EXTEND_TIMEOUT_USEC=``, three times this much),
    and again every ``extend_every`` seconds; 0 turns it off.
    """

    watchdog: bool = True
    extend_every: float = 5.0

    def __post_init__(self) -> None:
        check_range(self, "extend_every", 0, MAX_SECONDS, "seconds from 0 to 1e8")


class Systemd(Plugin):
    """Reports the bus's transitions to systemd over ``$NOTIFY_SOCKET``.

    The watchdog thread pings at half of ``$WATCHDOG_USEC``, but only while
    the bus is STARTED and no transition or graceful reload holds it: before
    each ping it takes the bus's transition lock, waiting at most a quarter of
    the interval. So a graceful listener or a stop that hangs in the main
    thread stops the pings, and systemd kills and restarts the site. It proves
    the bus can still carry out requests; it does not prove that the servers
    answer HTTP requests (a wedged app thread goes unnoticed). Pings also stop
    while the site restarts (re-exec), so ``WatchdogSec=`` must exceed a
    restart. A notify error is logged, never raised: the site keeps serving.
    ``environ`` is read instead of ``os.environ`` (for tests).

    It also keeps the site's listening sockets in systemd's FD store: the
    ``Sockets`` plugins publish each socket they bind on ``listening``, and
    an unclaimed one stored by an earlier run on ``stale_listener``.
    """

    channels = ("listening", "stale_listener")

    def __init__(
        self,
        bus: Bus,
        options: SystemdOptions | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(bus)
        self.options = options if options is not None else SystemdOptions()
        self.environ = os.environ if environ is None else environ
        self._pinger: threading.Thread | None = None
        self._exiting = threading.Event()
        self._extender: threading.Thread | None = None
        self._transition_over = threading.Event()
        self._pid = os.getpid()
        self._replaced_pid: int | None = None

    def subscribe(self) -> None:
        super().subscribe()
        if ("graceful", self._reloaded) not in self._subscribed:
            self.bus.subscribe("graceful", self._reloaded, priority=_LAST)
            self._subscribed.append(("graceful", self._reloaded))

    def _send(self, message: str) -> None:
        try:
            notify(message, self.environ)
        except ProcessError as exc:
            self.bus.log(str(exc), WARNING)

    @priority(StartOrder.DAEMON + 1)
    def start(self) -> None:
        """Report a daemon's new PID, then ask for more time while a start listener runs long.

        Right after the daemon plugin's fork, so that systemd knows the new
        main process before the launching one exits; the thread that asks for
        more time starts only now because the daemon refuses to fork while
        threads run.
        """
        pid = os.getpid()
        if pid != self._pid:
            self._send(f"MAINPID={pid}")
            self._replaced_pid, self._pid = self._pid, pid
        self._begin_extending()

    def state(self, state: State) -> None:
        """Send each transition; READY=1 at STARTED, RELOADING=1 or STOPPING=1 at STOPPING."""
        status = f"STATUS={state.value}" + (" (restarting)" if self.bus.restarting else "")
        if state is State.STOPPING:
            self._begin_extending()
        elif state is not State.STARTING:
            self._end_extending()  # before READY=1: no extension may follow it
        if state is State.STARTED:
            self._send(f"READY=1\n{status}")
            self._start_pinging()
        elif state is State.STOPPING and self.bus.restarting:
            self._send(f"RELOADING=1\nMONOTONIC_USEC={_monotonic_usec()}\n{status}")
        elif state is State.STOPPING:
            self._send(f"STOPPING=1\n{status}")
        else:
            self._send(status)

    @priority(_FIRST)
    def graceful(self) -> None:
        """RELOADING=1 before every other graceful listener runs."""
        self._send(f"RELOADING=1\nMONOTONIC_USEC={_monotonic_usec()}\nSTATUS=reloading")

    def listening(self, name: str, sock: socket.socket) -> bool:
        """Store ``sock`` in the FD store as ``name``; True once systemd has it.

        systemd keeps one copy of a descriptor however often it is sent, so
        storing again after a re-exec is harmless.
        """
        if not fd_store_offered(self.environ):
            return False
        message = f"FDSTORE=1\nFDNAME={name}"
        try:
            notify(message, self.environ, fds=[sock.fileno()])
        except ProcessError as exc:
            self.bus.log(f"Not kept in the FD store: {name}: {exc}", WARNING)
            return False
        return True

    def stale_listener(self, name: str) -> None:
        """Remove the sockets stored as ``name``: no bind claims them any more."""
        if fd_store_offered(self.environ):
            self._send(f"FDSTOREREMOVE=1\nFDNAME={name}")

    def _reloaded(self) -> None:
        """READY=1 after every other graceful listener ran (failed ones too)."""
        self._send(f"READY=1\nSTATUS={self.bus.state.value}")

    def exit(self) -> None:
        """Stop the watchdog thread."""
        self._end_extending()
        self._exiting.set()
        pinger, self._pinger = self._pinger, None
        if pinger is not None:
            pinger.join(self.bus.thread_join_timeout)

    def _begin_extending(self) -> None:
        every = self.options.extend_every
        if not every or self.bus.listener_timeout is None or self._extender is not None:
            return  # without a bound, a wedged listener would be extended for ever
        self._transition_over.clear()
        self._extender = threading.Thread(
            target=self._extend, args=(every,), name="sitebus-systemd-extend", daemon=True
        )
        self._extender.start()

    def _end_extending(self) -> None:
        self._transition_over.set()
        extender, self._extender = self._extender, None
        if extender is not None:
            extender.join(self.bus.thread_join_timeout)

    def _extend(self, every: float) -> None:
        """Ask for more time while the running listener is slow but not past its bound.

        systemd's own timeout (``TimeoutStartSec=``, ``TimeoutStopSec=``) still
        ends a listener that runs past ``listener_timeout``: the requests stop.
        """
        bound = self.bus.listener_timeout
        assert bound is not None
        extension = round(every * 3 * 1_000_000)
        while not self._transition_over.wait(every):
            running = self.bus.running_listener()
            if running is None:
                continue
            channel, name, seconds = running
            if every <= seconds < bound:
                self._send(
                    f"EXTEND_TIMEOUT_USEC={extension}\n"
                    f"STATUS={self.bus.state.value}: {name} on {channel!r} for {seconds:.0f} s"
                )

    def _start_pinging(self) -> None:
        interval = (
            watchdog_interval(self.environ, replaced_pid=self._replaced_pid)
            if self.options.watchdog
            else None
        )
        if interval is None or self._pinger is not None:
            return
        self._exiting.clear()
        self._pinger = threading.Thread(
            target=self._ping, args=(interval,), name="sitebus-systemd-watchdog", daemon=True
        )
        self._pinger.start()
        self.bus.register_thread(self._pinger)

    def _ping(self, interval: float) -> None:
        while not self._exiting.wait(interval / 2):
            if self._alive(interval / 4):
                self._send("WATCHDOG=1")

    def _alive(self, bound: float) -> bool:
        """Whether the bus is STARTED and no transition or graceful reload hangs."""
        return self.bus.state is State.STARTED and self.bus.responsive(bound)
