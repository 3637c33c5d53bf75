"""The ``Workers`` plugin: the master's bus runs the site in worker processes.

With it, the process that binds the sockets becomes a master. It keeps the
process-wide plugins (signals, PID file, daemon, privileges, systemd) and
the listening sockets, and runs no application code: an app change never
needs it restarted, and it stays small. At ``StartOrder.SERVERS``, where a
server would start serving, it starts the workers instead, each a fresh
interpreter handed the sockets (see ``_protocol``), and its start returns
once every one of them accepts, so the bus is STARTED (and systemd told
``READY=1``) only then.

On a ``MasterBus`` a restart request is a rolling restart, new worker
before old, one at a time: SIGHUP through the ``Signals`` plugin (which
still exits on a terminal's hangup), ``sitebus reload``, ``bus.restart()``
from any plugin. The master itself is never re-executed: it runs no app
code, so an app change never needs it. The plugin adds SIGTTIN and SIGTTOU:
one worker more, one fewer (never fewer than one).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._options import MAX_SECONDS, Options, check_range
from ..bus import WARNING, Bus, State
from ..errors import ProcessError, StateError
from ..plugin import Plugin, StartOrder, priority
from ._pool import Pool

if TYPE_CHECKING:
    from ..plugins.autoreload import Autoreload
    from ..servers.sockets import Sockets

    Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

__all__ = ["MasterBus", "Workers", "WorkersOptions", "cpu_count", "read_status"]

_STATUS_ORDER = StartOrder.PIDFILE + 1  # after the PID file, before privileges drop


def cpu_count() -> int:
    """The CPUs this process may run on: what ``workers = "auto"`` means."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class MasterBus(Bus):
    """A master's bus: asked to restart, it replaces its workers instead of re-executing.

    ``request_restart`` (what SIGHUP, ``restart()`` and autoreload call)
    hands the request to ``rolling_restart``, which the ``Workers`` plugin
    sets while its workers run; before they run there is nothing to replace
    and the request is dropped (the workers about to start load the new
    code anyway). Signal-safe, like the method it replaces.
    """

    rolling_restart: Callable[[], None] | None = None

    def request_restart(self) -> None:
        rolling = self.rolling_restart
        if rolling is not None:
            rolling()


class WorkersOptions(Options):
    """How many workers, and how they are watched.

    ``workers``: how many serve. ``worker_timeout``: seconds a serving worker
    may go without a heartbeat before it is killed and replaced.
    ``start_timeout``: seconds a new worker may take to accept.
    ``max_requests``: recycle a worker gracefully after that many requests
    (0: never), plus a random 0 to ``max_requests_jitter`` so that the workers
    do not all recycle at once. ``graceful_timeout``: how long a worker's stop
    may wait for its requests, after which (and a margin) it is killed.
    ``status_file``: where ``sitebus status`` finds the workers (None: nowhere).
    """

    workers: int = 1
    worker_timeout: float = 30.0
    start_timeout: float = 60.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    graceful_timeout: float = 30.0
    status_file: str | None = None

    def __post_init__(self) -> None:
        check_range(self, "workers", 1, 1024, "a number of workers from 1 to 1024")
        for name in ("worker_timeout", "start_timeout"):
            check_range(self, name, 0.1, MAX_SECONDS, "seconds from 0.1 to 1e8")
        check_range(self, "graceful_timeout", 0, MAX_SECONDS, "seconds from 0 to 1e8")
        for name in ("max_requests", "max_requests_jitter"):
            check_range(self, name, 0, 10**12, "a number of requests, 0 for none")


class Workers(Plugin):
    """Starts, supervises and stops the workers that serve ``sockets``.

    ``site`` says what a worker serves (JSON-able; see ``worker.py``).
    ``bus`` must be a ``MasterBus``, so that a restart replaces the workers.
    The SIGTTIN and SIGTTOU handlers are installed by ``subscribe()`` in the
    main thread and put back by ``unsubscribe()``; ``status_file`` is opened
    at start, before privileges drop, and rewritten in place whenever the
    workers change.

    With ``autoreload`` (the master's ``Autoreload`` plugin), the workers
    report the site's source files and the plugin watches them: an edit is
    a rolling restart. The plugin's watcher ends once it asked for a restart
    (a single process re-executes then); here it watches again once the
    rollout is over.
    """

    bus: MasterBus

    def __init__(
        self,
        bus: MasterBus,
        sockets: Sequence[Sockets],
        site: Mapping[str, Any],
        options: WorkersOptions | None = None,
        *,
        autoreload: Autoreload | None = None,
    ) -> None:
        if not isinstance(bus, MasterBus):
            raise TypeError("the Workers plugin needs a MasterBus: a restart replaces workers")
        super().__init__(bus)
        self.sockets = tuple(sockets)
        self.site = dict(site)
        self.options = options or WorkersOptions()
        self.autoreload = autoreload
        self._watched: set[str] = set()
        self.pool: Pool | None = None
        self._previous: list[tuple[signal.Signals, Handler]] = []
        self._status_fd: int | None = None
        self._status_lock = threading.Lock()
        self._notified: int | None = None
        self._rolling = False

    def subscribe(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise StateError(
                "the Workers plugin installs signal handlers: subscribe it in the main thread"
            )
        super().subscribe()
        self.bus.subscribe("start", self._open_status, _STATUS_ORDER)
        self.bus.subscribe("stop", self._close_status, _STATUS_ORDER)
        if self._previous:
            return
        handlers: list[tuple[signal.Signals, Handler]] = [
            (signal.SIGTTIN, lambda _s, _f: self._resize(1)),
            (signal.SIGTTOU, lambda _s, _f: self._resize(-1)),
        ]
        for signum, handler in handlers:
            self._previous.append((signum, signal.signal(signum, handler)))

    def unsubscribe(self) -> None:
        while self._previous:
            signum, previous = self._previous.pop()
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self.bus.unsubscribe("stop", self._close_status)
        self.bus.unsubscribe("start", self._open_status)
        super().unsubscribe()

    # -- signal handlers: record, never act ----------------------------------

    def _resize(self, change: int) -> None:
        if self.pool is not None:
            self.pool.request_resize(change)

    # -- the bus --------------------------------------------------------------

    @priority(StartOrder.SERVERS)
    def start(self) -> None:
        options = self.options
        listeners = [
            (listener.address.spec, listener.socket)
            for sockets in self.sockets
            for listener in sockets.listeners
        ]
        record = {
            "site": self.site,
            "watch": self.autoreload is not None,
            "heartbeat": _heartbeat_interval(options.worker_timeout),
            "max_requests": options.max_requests,
            "max_requests_jitter": options.max_requests_jitter,
        }
        self.pool = Pool(
            wanted=options.workers,
            listeners=listeners,
            record=record,
            worker_timeout=options.worker_timeout,
            start_timeout=options.start_timeout,
            graceful_timeout=options.graceful_timeout,
            log=self.bus.log,
            changed=self._changed,
            watch=self._watch,
            failed=lambda: self.bus.request_exit(1),  # a master without workers serves nobody
        )
        self.pool.start()
        self.bus.rolling_restart = self.pool.request_restart
        why = self.pool.wait_started(options.start_timeout + 5.0)
        if why is not None:
            raise ProcessError(f"The workers did not start: {why} (see its log above)")
        urls = [listener.url for sockets in self.sockets for listener in sockets.listeners]
        self.bus.log(f"{options.workers} worker(s) serving on {', '.join(urls)}")

    @priority(StartOrder.SERVERS)
    def stop(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        self.bus.rolling_restart = None
        pool.hold()
        deadline = time.monotonic() + self.options.graceful_timeout
        if not self.bus.restarting and pool.serving():
            # The sockets are shared: the master holds off new connections
            # while the workers still accept what is queued, then stops them.
            for sockets in self.sockets:
                sockets.hold_off()
            for sockets in self.sockets:
                if not sockets.wait_drained(deadline):
                    self.bus.log("Connections still queued at the graceful timeout", WARNING)
        pool.stop(self.options.graceful_timeout + 30.0)

    def graceful(self) -> None:
        """Pass the graceful reload (reopen logs) on to every worker, as SIGUSR1."""
        if self.pool is not None:
            self.pool.signal_all(signal.SIGUSR1)

    # -- status -----------------------------------------------------------------

    def _open_status(self) -> None:
        path = self.options.status_file
        if path is None or self._status_fd is not None:
            return
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._status_fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise ProcessError(
                f"Cannot open the workers' status file {path!r}: {exc.strerror}"
            ) from exc

    def _close_status(self) -> None:
        with self._status_lock:  # a supervisor that overran its stop may still write
            fd, self._status_fd = self._status_fd, None
        if fd is None:
            return
        os.close(fd)
        if self.options.status_file is not None and not self.bus.restarting:
            with contextlib.suppress(OSError):  # privileges dropped: a stale file is harmless
                os.unlink(self.options.status_file)

    @priority(StartOrder.SERVERS)
    def state(self, state: State) -> None:
        """Once started, say how many serve (after the systemd plugin's ``STATUS=started``).

        As a stop begins, tell the workers to drain: their readiness probes
        answer 503 while a ``Health`` plugin on this bus waits its drain delay.
        """
        if state is State.STARTED and self.pool is not None:
            self._notify(f"STATUS={self.pool.serving()} of {self.pool.wanted} worker(s) serving")
        elif state is State.STOPPING and self.pool is not None:
            self.pool.request_drain()

    def _changed(self) -> None:
        pool = self.pool
        if pool is None:
            return
        workers = pool.snapshot()
        self._write_status({"master": os.getpid(), "workers": [w.status() for w in workers]})
        serving = sum(1 for w in workers if w.state == "serving")
        status = f"STATUS={serving} of {pool.wanted} worker(s) serving"
        if pool.rolling != self._rolling:
            # systemd's reload protocol (Type=notify-reload): a rolling restart
            # is the reload, over once every worker is replaced (or it stopped).
            self._rolling = pool.rolling
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            reload = f"RELOADING=1\nMONOTONIC_USEC={usec}" if pool.rolling else "READY=1"
            self._notify(f"{reload}\n{status}")
            if not pool.rolling:
                self._watch_again()
        elif serving != self._notified:
            self._notify(status)
        self._notified = serving

    def _watch(self, path: str) -> None:
        """A worker's source file: the master's watcher takes it in (once)."""
        if self.autoreload is not None and path not in self._watched:
            self._watched.add(path)
            self.autoreload.watch(path)

    def _watch_again(self) -> None:
        """After a rollout: watch again, from the files as they are now."""
        if self.autoreload is not None and self.bus.state is State.STARTED:
            self.autoreload.stop()
            self.autoreload.start()

    def _notify(self, message: str) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        from ..plugins.systemd import notify

        try:
            notify(message)
        except ProcessError as exc:
            self.bus.log(str(exc), WARNING)

    def _write_status(self, status: dict[str, Any]) -> None:
        with self._status_lock:
            fd = self._status_fd
            if fd is None:
                return
            data = json.dumps(status, separators=(",", ":")).encode()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, data, 0)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as exc:
                self.bus.log(f"Cannot write the workers' status: {exc.strerror}", WARNING)


def _heartbeat_interval(timeout: float) -> float:
    """A worker beats four times per timeout: one late beat is no death sentence."""
    return min(timeout / 4, 5.0)


def read_status(path: str, master: int) -> list[dict[str, Any]] | None:
    """The workers listed in ``path`` by the master ``master``; None if it lists none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        with os.fdopen(os.dup(fd), "rb") as file:
            text = file.read()
    finally:
        os.close(fd)
    try:
        status = json.loads(text)
    except ValueError:
        return None
    if not isinstance(status, dict) or status.get("master") != master:
        return None
    workers = status.get("workers")
    return workers if isinstance(workers, list) else None
